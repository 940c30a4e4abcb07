"""Safe checkpoints: atomic writes, no code execution on load, exact resume.

A checkpoint is a ``torch.save`` file holding only tensors, numbers, strings and containers of
them, and it is always read with ``torch.load(weights_only=True)``, which refuses anything else:
loading a checkpoint never runs code from the file. It is written to a temporary file in the
same folder and renamed into place, so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from forwardforward.errors import CheckpointError

FORMAT = "forwardforward-checkpoint-1"

# how torch's safe loader names the object it refused, e.g. "GLOBAL posix.system"
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def fingerprint(model: nn.Module) -> dict[str, list[int]]:
    """The names and shapes of a model's parameters and buffers: what must match on load."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def save_checkpoint(
    path: Path,
    model: nn.Module,
    *,
    config: dict[str, Any],
    optim: dict[str, Any] | None = None,
    trainer: dict[str, Any] | None = None,
) -> None:
    """Write model weights, optimiser state, trainer state and the run configuration."""
    payload = {
        "format": FORMAT,
        "config": json.dumps(config),
        "fingerprint": json.dumps(fingerprint(model)),
        "model": model.state_dict(),
        "optim": optim or {},
        "trainer": trainer or {},
    }
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint without executing code; a clear error for anything else."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol notes: our message says it
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # the safe loader refused the file: it names a Python object, or is not a pickle we read
        found = _GLOBAL.search(str(exc))
        what = (
            f"holds something other than tensors and plain values (it names {found.group(1)})"
            if found
            else "is not made of tensors and plain values only (or is damaged)"
        )
        raise CheckpointError(
            f"{path}: refused: the file {what}. Checkpoints are read by a loader that builds "
            "nothing else, so no code from this file was run. A checkpoint written by "
            "forwardforward never holds such objects: this file was made some other way."
        ) from None
    except Exception:  # torch raises many types (RuntimeError, EOFError, KeyError) for damage
        raise CheckpointError(
            f"{path}: truncated or corrupt checkpoint: it is not a complete file written by "
            "`ff train` (was the copy cut short, or the run killed while the disk was full?)"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a forwardforward checkpoint (format {FORMAT} expected)")
    try:
        payload["config"] = json.loads(payload["config"])
        payload["fingerprint"] = json.loads(payload["fingerprint"])
        if not isinstance(payload["config"], dict) or not isinstance(payload["model"], dict):
            raise TypeError("config and model must be tables")
        for key in ("optim", "trainer"):
            if not isinstance(payload.get(key), dict):
                raise TypeError(f"{key} must be a table")
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged forwardforward checkpoint ({exc})") from None
    return payload


def load_into(model: nn.Module, payload: dict[str, Any], path: Path) -> None:
    """Load checkpoint weights into ``model`` after checking that they belong to it."""
    expected = fingerprint(model)
    found = payload["fingerprint"]
    if expected != found:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        shapes = [k for k in set(expected) & set(found) if expected[k] != found[k]]
        detail = []
        if missing:
            detail.append(f"missing {', '.join(missing[:4])}")
        if extra:
            detail.append(f"unexpected {', '.join(extra[:4])}")
        for k in shapes[:4]:
            detail.append(f"{k} has shape {found[k]}, the model needs {expected[k]}")
        raise CheckpointError(f"{path}: checkpoint is from another model ({'; '.join(detail)})")
    model.load_state_dict(payload["model"])
