"""Shared fixtures: a tiny synthetic run description (a TOML file and its RunConfig), a local
HTTP server for download tests, and no downloads from the real mirrors."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from forwardforward.config import RunConfig, load_preset

# The test machine is small and shared: torch's default intra-op thread pool makes the tiny
# matrix products of these tests ~30x slower under load. One thread keeps every test fast (runs
# also set train.threads = 1, so in-process and subprocess runs compute identically).
torch.set_num_threads(1)

# A run small enough for a test: the built-in synthetic dataset (2000 train images, no files),
# two tiny layers, batch 50 -> 40 optimisation steps per epoch, 3 epochs. It keeps state that an
# exact resume must restore: SGD momentum, a cooldown schedule, peer-normalisation running means
# and a jointly trained probe.
TINY_TOML = """\
name = "tiny"
description = "a tiny synthetic run for tests"

[data]
dataset = "synthetic"

[model]
layers = [32, 16]
norm = "rms"
activation = "relu_st"
init = "normal_fan_out"
peer_weight = 0.03
label = "overwrite"

[negatives]
kind = "random_wrong"

[readout]
kind = "probe"
probe_mode = "joint"

[optim]
name = "sgd"
lr = 0.001
momentum = 0.9
weight_decay = 0.0003
schedule = "cooldown"

[train]
epochs = 3
batch_size = 50
eval_batch_size = 500
seed = 3
device = "cpu"
threads = 1

[baseline.optim]
name = "adam"
lr = 0.001
"""


@pytest.fixture(scope="session")
def tiny_toml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a TOML file holding :data:`TINY_TOML` (a preset given by path), in a folder of
    its own so that it never shows up in a test's ``tmp_path``."""
    path = tmp_path_factory.mktemp("preset") / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


@pytest.fixture
def tiny_config(tiny_toml: Path) -> Callable[..., RunConfig]:
    """``make(*overrides)`` -> the tiny run's :class:`RunConfig` with ``key=value`` overrides."""

    def make(*overrides: str) -> RunConfig:
        return load_preset(str(tiny_toml), list(overrides))

    return make


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test downloads from the real mirrors: automatic downloads are off unless a test turns
    them on again (``monkeypatch.delenv("FORWARDFORWARD_OFFLINE")``) against a local server."""
    monkeypatch.setenv("FORWARDFORWARD_OFFLINE", "1")


# ---------------------------------------------------------------------------------------------
# A local HTTP server standing in for a dataset mirror


@dataclass
class Route:
    """What the server answers for one path."""

    mode: str  # "ok", "404", "short" (announce everything, send half, close), "slow"
    body: bytes = b""


@dataclass
class Server:
    base: str
    routes: dict[str, Route] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def url(self, prefix: str) -> str:
        return f"{self.base}/{prefix}/"


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(base="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits.append(self.path)
            route = state.routes.get(self.path)
            if route is None or route.mode == "404":
                self.send_error(404, "Not Found")
                return
            if route.mode == "slow":
                time.sleep(2.0)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            if route.mode == "short":
                self.wfile.write(route.body[: len(route.body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(route.body)

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
