"""forwardforward: the Forward-Forward algorithm for PyTorch.

Two ways in: a preset (``ff.load_preset`` and ``ff.Trainer``, or ``ff train`` on the command
line), or your own network from the building blocks below, trained by the same loop::

    net = ff.FFSequential([ff.FFLinear(784, 500), ff.FFLinear(500, 500)],
                          labels=ff.OverwritePixels(10, 784), loss=ff.SymBa(alpha=4.0))
    ff.fit(net, ff.load_dataset("mnist"), epochs=2)

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
from forwardforward.goodness import group_goodness, mean_squares, sum_squares
from forwardforward.labels import Concatenate, LabelEncoder, LabelPlanes, OverwritePixels, TopRow
from forwardforward.layers import FFConv2d, FFLayer, FFLinear, FFLocallyConnected2d
from forwardforward.loop import Callback, Checkpoint, Evaluate, Loop, accuracy, fit
from forwardforward.losses import SymBa, ThresholdSoftplus, symba, threshold_softplus
from forwardforward.negatives import AllWrong, Hard, RandomWrong
from forwardforward.nets import FFModule, FFNet
from forwardforward.nets.channelwise import ChannelwiseNet, ChooseVoters
from forwardforward.perf import keep_freed_memory
from forwardforward.sequential import FFSequential
from forwardforward.train import Trainer, load_run

__version__ = "0.1.0"

__all__ = [
    "AllWrong",
    "Callback",
    "ChannelwiseNet",
    "Checkpoint",
    "CheckpointError",
    "ChooseVoters",
    "Concatenate",
    "ConfigError",
    "DataError",
    "Evaluate",
    "FFConv2d",
    "FFError",
    "FFLayer",
    "FFLinear",
    "FFLocallyConnected2d",
    "FFModule",
    "FFNet",
    "FFSequential",
    "FetchError",
    "Hard",
    "LabelEncoder",
    "LabelPlanes",
    "Loop",
    "OverwritePixels",
    "RandomWrong",
    "RunConfig",
    "SymBa",
    "ThresholdSoftplus",
    "TopRow",
    "Trainer",
    "TrainingDiverged",
    "__version__",
    "accuracy",
    "fit",
    "group_goodness",
    "keep_freed_memory",
    "load_dataset",
    "load_preset",
    "load_run",
    "mean_squares",
    "preset_names",
    "sum_squares",
    "symba",
    "threshold_softplus",
]
