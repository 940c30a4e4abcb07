"""forwardforward: the Forward-Forward algorithm for PyTorch.

>>> import forwardforward as ff
>>> config = ff.load_preset("mnist-quick", ["train.epochs=1"])
>>> config.model.layers
[1000, 1000]
"""

from forwardforward.config import RunConfig, load_preset, preset_names
from forwardforward.data import load_dataset
from forwardforward.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    FetchError,
    FFError,
    TrainingDiverged,
)
from forwardforward.nets import FFNet
from forwardforward.perf import keep_freed_memory
from forwardforward.train import Trainer, load_run

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "FFError",
    "FFNet",
    "FetchError",
    "RunConfig",
    "Trainer",
    "TrainingDiverged",
    "__version__",
    "keep_freed_memory",
    "load_dataset",
    "load_preset",
    "load_run",
    "preset_names",
]
