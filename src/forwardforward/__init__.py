"""forwardforward: the Forward-Forward algorithm for PyTorch.

>>> import forwardforward as ff
>>> config = ff.load_preset("mnist-quick")
"""

from forwardforward.config import RunConfig, load_preset, preset_names
from forwardforward.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    FetchError,
    FFError,
    TrainingDiverged,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "FFError",
    "FetchError",
    "RunConfig",
    "TrainingDiverged",
    "__version__",
    "load_preset",
    "preset_names",
]
