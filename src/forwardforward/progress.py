"""Progress reporting that suits where the output goes.

On a terminal, long loops show a live tqdm bar. When the output is a file or a pipe (a log, CI,
``nohup``), carriage-return refreshes would pile up in it, so :func:`progress` prints plain lines
instead: nothing per step, and at most one line every ``interval`` seconds while a loop runs
longer than that. The caller prints its own one-line summary when the loop ends (an epoch's
metrics, a downloaded file), as Keras and Lightning do in non-interactive mode.

``FORWARDFORWARD_PROGRESS`` overrides the choice: ``bar`` (always a bar), ``lines`` (always
plain lines) or ``off`` (nothing); ``auto`` or unset picks by whether the stream is a terminal.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sized
from typing import IO, Any, Generic, Literal, TypeVar

from forwardforward.errors import ConfigError

__all__ = ["PROGRESS_ENV", "LineProgress", "ProgressStyle", "progress", "progress_style"]

T = TypeVar("T")

PROGRESS_ENV = "FORWARDFORWARD_PROGRESS"
ProgressStyle = Literal["bar", "lines", "off"]
_STYLES = ("auto", "bar", "lines", "off")

#: Seconds between two plain progress lines within one loop.
LINE_INTERVAL = 10.0


def clock() -> float:
    """The clock plain progress lines are paced by (tests replace it)."""
    return time.monotonic()


def progress_style(enabled: bool = True, stream: IO[str] | None = None) -> ProgressStyle:
    """How progress is shown on ``stream`` (default stderr): ``bar``, ``lines`` or ``off``."""
    if not enabled:
        return "off"
    choice = os.environ.get(PROGRESS_ENV, "auto").strip().lower() or "auto"
    if choice not in _STYLES:
        raise ConfigError(f"{PROGRESS_ENV}={choice!r}: choose one of {', '.join(_STYLES)}")
    if choice != "auto":
        return choice  # type: ignore[return-value]
    out = sys.stderr if stream is None else stream
    isatty = getattr(out, "isatty", None)
    return "bar" if callable(isatty) and isatty() else "lines"


class LineProgress(Generic[T]):
    """Iterates like a tqdm bar, but writes at most one short line every ``interval`` seconds.

    It offers the part of tqdm's interface the library uses: iteration, ``update``,
    ``set_postfix``, ``close`` and use as a context manager.
    """

    def __init__(
        self,
        iterable: Iterable[T] | None,
        *,
        desc: str,
        total: int | None,
        unit: str,
        unit_scale: bool,
        stream: IO[str],
        interval: float = LINE_INTERVAL,
    ) -> None:
        self.iterable = iterable
        self.desc, self.total, self.unit, self.unit_scale = desc, total, unit, unit_scale
        self.stream, self.interval = stream, interval
        self.n = 0
        self.postfix: dict[str, str] = {}
        self.start = self.last = clock()

    def __iter__(self) -> Iterator[T]:
        assert self.iterable is not None, "LineProgress without an iterable: use update()"
        for item in self.iterable:
            yield item
            self.update(1)

    def __enter__(self) -> LineProgress[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = clock()
        if now - self.last >= self.interval:
            self.last = now
            self.stream.write(self._line(now) + "\n")
            self.stream.flush()

    def set_postfix(self, values: Mapping[str, Any]) -> None:
        self.postfix = {k: str(v) for k, v in values.items()}

    def close(self) -> None:
        """Nothing to clear: the caller prints its own summary line."""

    def _amount(self, n: float) -> str:
        """``n`` with the unit, scaled to binary prefixes when ``unit_scale`` (``3.2 MiB``)."""
        if not self.unit_scale:
            return f"{n:g} {self.unit}"
        prefix = ""
        for prefix in ("", "Ki", "Mi", "Gi"):
            if abs(n) < 1024 or prefix == "Gi":
                break
            n /= 1024
        return f"{n:.0f} {self.unit}" if prefix == "" else f"{n:.1f} {prefix}{self.unit}"

    def _line(self, now: float) -> str:
        where = self._amount(self.n)
        if self.total:
            where += f" of {self._amount(self.total)} ({self.n / self.total:.0%})"
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        return f"{self.desc}: {where}, {now - self.start:.0f} s{extra}"


def progress(
    iterable: Iterable[T] | None = None,
    *,
    desc: str,
    total: int | None = None,
    enabled: bool = True,
    unit: str = "it",
    unit_scale: bool = False,
    stream: IO[str] | None = None,
) -> Any:
    """A progress reporter over ``iterable`` (or driven by ``update`` when it is ``None``).

    A tqdm bar on a terminal, a :class:`LineProgress` elsewhere, a silent tqdm when disabled.
    """
    out = sys.stderr if stream is None else stream
    style = progress_style(enabled, out)
    if total is None and isinstance(iterable, Sized):
        total = len(iterable)
    if style == "lines":
        return LineProgress(
            iterable, desc=desc, total=total, unit=unit, unit_scale=unit_scale, stream=out
        )
    from tqdm import tqdm

    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        unit_scale=unit_scale,
        unit_divisor=1024,
        disable=style == "off",
        leave=False,
        file=out,
    )
