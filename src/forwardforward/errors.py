"""The library's exceptions: every error a user can cause derives from :class:`FFError`."""

from __future__ import annotations


class FFError(Exception):
    """Base class of every error raised on purpose by forwardforward."""


class DataError(FFError):
    """A data file is missing, corrupt, truncated or not in the expected format."""


class FetchError(DataError):
    """Downloading a data file failed on every mirror."""


class ConfigError(FFError):
    """A configuration, preset name or option is unknown or invalid."""


class CheckpointError(FFError):
    """A checkpoint is unreadable or belongs to another model."""


class TrainingDiverged(FFError):
    """A loss became NaN or infinite during training."""
