"""Finding, verifying and downloading dataset files.

Layout: every dataset lives in ``<data dir>/<spec.folder>/`` (e.g.
``~/.cache/forwardforward/mnist``) under its original file names. :func:`resolve_data_dir` picks
the data directory.

Downloads are atomic: a file is streamed into a hidden temporary file (``.<name>.<random>.part``)
in the destination folder, its size and checksum are checked, and only then is it renamed over the
final path. A failed or interrupted download leaves no partial file behind, and an existing (even
corrupt) file is only replaced by a verified one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import socket
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from forwardforward.data.catalog import DatasetSpec, FileSpec, dataset_spec
from forwardforward.errors import FetchError
from forwardforward.progress import progress as progress_bar
from forwardforward.progress import progress_style

__all__ = [
    "DATA_ENV_VAR",
    "FileReport",
    "fetch_dataset",
    "fetch_file",
    "hash_file",
    "present_form",
    "resolve_data_dir",
    "verify_dataset",
    "verify_file",
]

#: Environment variable naming the data directory.
DATA_ENV_VAR = "FORWARDFORWARD_DATA"
CACHE_ENV_VAR = "FORWARDFORWARD_CACHE"

_CHUNK = 1 << 20  # 1 MiB
_USER_AGENT = "forwardforward-data/0.1 (+python urllib)"

Status = Literal["verified", "missing", "corrupt"]


def _resolve(explicit: str | os.PathLike[str] | None, env_var: str, *default: str) -> Path:
    """``explicit``, else ``$env_var``, else ``default`` under the user cache folder
    (``$XDG_CACHE_HOME`` when it is an absolute path, else ``~/.cache``). Empty means unset."""
    if explicit is not None and os.fspath(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(env_var, "")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return root.joinpath(*default)


def resolve_cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where generated data (Moving MNIST videos) is kept: ``explicit``, else
    ``$FORWARDFORWARD_CACHE``, else ``generated/`` in the user cache. Not created here."""
    return _resolve(explicit, CACHE_ENV_VAR, "forwardforward", "generated")


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``explicit``, else ``$FORWARDFORWARD_DATA``, else the user cache.

    The user cache is ``$XDG_CACHE_HOME/forwardforward`` when ``XDG_CACHE_HOME`` is an absolute
    path, else ``~/.cache/forwardforward``. Empty strings count as unset. The folder is not
    created.
    """
    return _resolve(explicit, DATA_ENV_VAR, "forwardforward")


@dataclass(frozen=True)
class FileReport:
    """The result of checking one file against the catalog.

    Attributes:
        dataset: the dataset's name (may be empty for ad-hoc file specs).
        file: the file name.
        path: where the file was looked for.
        status: ``"verified"`` (size and checksum match), ``"missing"`` or ``"corrupt"``.
        detail: what was checked or what is wrong, e.g. ``"size 9912421 != 9912422"``.
    """

    dataset: str
    file: str
    path: Path
    status: Status
    detail: str

    @property
    def ok(self) -> bool:
        """True when the file is verified."""
        return self.status == "verified"


def hash_file(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks. Raises ``OSError`` if unreadable."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: str | os.PathLike[str], spec: FileSpec, *, dataset: str = "") -> FileReport:
    """Check one file's size, then its sha256 (or md5 when the catalog has no sha256).

    Never raises for a bad file: problems are reported in the returned :class:`FileReport`.
    """
    p = Path(path)

    def report(status: Status, detail: str) -> FileReport:
        return FileReport(dataset=dataset, file=spec.name, path=p, status=status, detail=detail)

    try:
        st = p.stat()
    except FileNotFoundError:
        return report("missing", "not found")
    except OSError as exc:
        return report("corrupt", f"cannot stat: {exc.strerror or exc}")
    if not p.is_file():
        return report("corrupt", "not a regular file")
    if st.st_size != spec.size:
        return report("corrupt", f"size {st.st_size} != {spec.size}")
    try:
        actual = hash_file(p, spec.algorithm)
    except OSError as exc:
        return report("corrupt", f"cannot read: {exc.strerror or exc}")
    if actual != spec.digest:
        return report("corrupt", f"{spec.algorithm} mismatch: {actual} != {spec.digest}")
    return report("verified", f"size and {spec.algorithm} match")


def present_form(folder: Path, spec: FileSpec) -> FileSpec:
    """The form of ``spec`` found in ``folder``: the file as distributed when it is there (even
    if damaged), else its uncompressed form when that is there, else ``spec`` (missing)."""
    raw = spec.unpacked
    if raw is not None and not (folder / spec.name).exists() and (folder / raw.name).exists():
        return raw
    return spec


def verify_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[FileReport]:
    """Verify every file of a catalog dataset in ``<data_dir>/<folder>``: each file as
    distributed, or its uncompressed form where only that is present.

    Args:
        name: dataset name, e.g. ``"mnist"``.
        data_dir: the data directory (default: :func:`resolve_data_dir`).

    Returns:
        One report per file, in catalog order.

    Raises:
        ConfigError: unknown dataset name.
    """
    spec = dataset_spec(name)
    folder = resolve_data_dir(data_dir) / spec.folder
    forms = [present_form(folder, f) for f in spec.files.values()]
    return [verify_file(folder / f.name, f, dataset=spec.name) for f in forms]


def _describe_error(exc: BaseException, timeout: float) -> str:
    """A short, one-line reason for a failed download."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}".strip()
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return f"timed out after {timeout:g} s"
        if isinstance(reason, OSError) and reason.strerror:
            return reason.strerror
        return str(reason)
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, http.client.IncompleteRead):
        return "connection closed before the end of the file"
    if isinstance(exc, http.client.HTTPException):
        return f"bad HTTP response: {type(exc).__name__}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _unreachable(exc: BaseException) -> bool:
    """Whether a download failed because its host could not be reached at all."""
    if isinstance(exc, urllib.error.HTTPError):
        return False  # the host answered
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return True
    return isinstance(exc, (TimeoutError, socket.timeout, ConnectionRefusedError, socket.gaierror))


class _DownloadFailed(Exception):
    """Internal: one mirror failed for a reason that is already a short message."""


def _download(url: str, spec: FileSpec, dest: Path, *, timeout: float, progress: bool) -> None:
    """Download ``url`` to ``dest`` via a verified temporary file; raise on any failure."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                if length is not None and length.strip().isdigit() and int(length) != spec.size:
                    raise _DownloadFailed(
                        f"server announces {int(length)} bytes, expected {spec.size}"
                    )
                digest = hashlib.new(spec.algorithm)
                received = 0
                with progress_bar(
                    total=spec.size,
                    unit="B",
                    unit_scale=True,
                    desc=f"downloading {spec.name}",
                    enabled=progress,
                ) as bar:
                    while True:
                        try:
                            chunk = response.read(_CHUNK)
                        except http.client.IncompleteRead as exc:
                            received += len(exc.partial)
                            raise _DownloadFailed(
                                f"short transfer: connection closed after {received} of "
                                f"{spec.size} bytes"
                            ) from None
                        if not chunk:
                            break
                        received += len(chunk)
                        if received > spec.size:
                            raise _DownloadFailed(f"more than the expected {spec.size} bytes")
                        digest.update(chunk)
                        out.write(chunk)
                        bar.update(len(chunk))
            if received != spec.size:
                raise _DownloadFailed(
                    f"short transfer: connection closed after {received} of {spec.size} bytes"
                )
            if digest.hexdigest() != spec.digest:
                raise _DownloadFailed(f"{spec.algorithm} mismatch")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fetch_one(
    spec: FileSpec,
    dest_dir: Path,
    *,
    mirrors: Sequence[str] | None,
    timeout: float,
    progress: bool,
    dataset: str,
    unreachable: set[str] | None = None,
) -> tuple[Path, list[str]]:
    """Make ``dest_dir/spec.name`` a verified file; return it and the failures, one per mirror.

    The returned list is empty on success. Hosts that could not be reached (no answer, refused,
    unknown name, timed out) are added to ``unreachable`` and skipped from then on, so that an
    offline machine fails in one round of connection attempts rather than one per file.
    """
    down = set() if unreachable is None else unreachable
    dest = dest_dir / spec.name
    if verify_file(dest, spec, dataset=dataset).ok:
        return dest, []
    raw = spec.unpacked
    if raw is not None and not dest.exists() and verify_file(dest_dir / raw.name, raw).ok:
        return dest_dir / raw.name, []
    urls = spec.urls(None if mirrors is None else tuple(mirrors))
    if not urls:
        return dest, ["no mirrors known"]
    failures: list[str] = []
    for url in urls:
        host = urllib.parse.urlsplit(url).netloc
        if host in down:
            failures.append(f"{url}: skipped ({host} could not be reached for an earlier file)")
            continue
        try:
            _download(url, spec, dest, timeout=timeout, progress=progress)
        except _DownloadFailed as exc:
            failures.append(f"{url}: {exc}")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # OSError covers URLError, HTTPError, timeouts, resets, refused connections and disk
            # errors; ValueError covers malformed URLs.
            failures.append(f"{url}: {_describe_error(exc, timeout)}")
            if isinstance(exc, urllib.error.HTTPError):
                exc.close()
            elif _unreachable(exc):
                down.add(host)
        else:
            if progress_style(progress) == "lines":
                done = f"downloaded {dest} ({spec.size} bytes, {spec.algorithm} verified)"
                print(done, file=sys.stderr)
            return dest, []
    return dest, failures


def _failure_message(
    what: str, folder: Path, failed: list[tuple[FileSpec, list[str]]], hint: str
) -> str:
    names = ", ".join(spec.name for spec, _ in failed)
    lines = [f"could not download {what} into {folder}: {names}"]
    for spec, reasons in failed:
        existing = verify_file(folder / spec.name, spec)
        note = (
            f" (the existing file is corrupt: {existing.detail})"
            if existing.status == "corrupt"
            else ""
        )
        lines.append(f"  {spec.name}{note}:")
        lines.extend(f"    {reason}" for reason in reasons)
    lines.append(
        f"Download the file(s) by hand from one of the URLs above and put them in {folder}{hint}."
    )
    return "\n".join(lines)


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"cannot create the data folder {folder}: {exc.strerror or exc}") from exc


def fetch_file(
    spec: FileSpec,
    dest_dir: str | os.PathLike[str],
    *,
    mirrors: Sequence[str] | None = None,
    timeout: float = 10.0,
    progress: bool = True,
    dataset: str = "",
) -> Path:
    """Make sure ``dest_dir/spec.name`` exists and is verified, downloading it if needed.

    Mirrors are tried in turn (``mirrors`` overrides ``spec.mirrors``: base URLs, the file name
    is appended). Each download streams into a temporary ``.part`` file in ``dest_dir`` that is
    checked for size and checksum before it replaces the destination, so a failure never leaves
    a partial file and never clobbers an existing file.

    Args:
        spec: the file to fetch.
        dest_dir: the folder to put it in (created if needed).
        mirrors: base URLs to use instead of ``spec.mirrors``.
        timeout: socket timeout in seconds for connecting and for each read.
        progress: show a tqdm progress bar.
        dataset: the dataset's name, for messages.

    Returns:
        The path of the verified file.

    Raises:
        FetchError: every mirror failed; the message gives each mirror's reason.
    """
    folder = Path(dest_dir)
    _make_folder(folder)
    dest, failures = _fetch_one(
        spec, folder, mirrors=mirrors, timeout=timeout, progress=progress, dataset=dataset
    )
    if failures:
        what = f"{dataset} file" if dataset else "file"
        raise FetchError(_failure_message(what, folder, [(spec, failures)], ""))
    return dest


def fetch_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    timeout: float = 10.0,
    progress: bool = True,
) -> list[Path]:
    """Download every file of a catalog dataset that is not already present and verified.

    Files go to ``<data_dir>/<folder>/`` (``data_dir`` defaults to :func:`resolve_data_dir`).
    Already verified files are not downloaded again. See :func:`fetch_file` for the download
    procedure.

    Returns:
        The paths of all the dataset's files, in catalog order.

    Raises:
        ConfigError: unknown dataset name.
        FetchError: one or more files could not be downloaded from any mirror. The single error
            names every such file, the folder to put them in and each mirror's reason. Files
            that did download are kept.
    """
    spec: DatasetSpec = dataset_spec(name)
    root = resolve_data_dir(data_dir)
    folder = root / spec.folder
    _make_folder(folder)
    paths: list[Path] = []
    failed: list[tuple[FileSpec, list[str]]] = []
    unreachable: set[str] = set()
    for file_spec in spec.files.values():
        dest, failures = _fetch_one(
            file_spec,
            folder,
            mirrors=None,
            timeout=timeout,
            progress=progress,
            dataset=spec.name,
            unreachable=unreachable,
        )
        paths.append(dest)
        if failures:
            failed.append((file_spec, failures))
    if failed:
        what = f"{len(failed)} of {len(spec.files)} {spec.title} files"
        hint = f", then check them with `ff data fetch {spec.name} --data-dir {root}`"
        raise FetchError(_failure_message(what, folder, failed, hint))
    return paths
