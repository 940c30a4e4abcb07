"""Reading and writing IDX files, the format of MNIST, Fashion-MNIST and KMNIST.

An IDX file is a big-endian header followed by the raw array data in C order::

    bytes 0-1   zero
    byte  2     data type code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64
    byte  3     number of dimensions ``ndim``
    4 * ndim    the size of each dimension, big-endian uint32
    rest        ``prod(shape) * itemsize`` bytes of big-endian data

The files are usually distributed gzip-compressed (``*.gz``). :func:`read_idx` accepts both and
tells them apart by the gzip magic number, not by the file name.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from forwardforward.errors import DataError

__all__ = ["IDX_DTYPES", "encode_idx", "read_idx", "write_idx"]

_GZIP_MAGIC = b"\x1f\x8b"

#: IDX data type code -> big-endian NumPy dtype.
IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_CODE_NAMES = {
    0x08: "uint8",
    0x09: "int8",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
_ACCEPTED_CODES = ", ".join(f"0x{code:02X} ({name})" for code, name in _CODE_NAMES.items())

#: NumPy 1.x supports at most 32 dimensions; no real IDX file comes close.
MAX_NDIM = 32


def _describe_source(source: str | os.PathLike[str] | bytes, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return os.fspath(source)


def read_idx(
    source: str | os.PathLike[str] | bytes, *, name: str | None = None
) -> npt.NDArray[Any]:
    """Read an IDX file (raw or gzip-compressed) into a NumPy array.

    Args:
        source: a path to the file, or the file's content as ``bytes``.
        name: how to call the file in error messages (default: the path, or ``<bytes>``).

    Returns:
        A writable, native-byte-order array with the file's shape, e.g. ``(N, H, W)`` uint8 for
        image files and ``(N,)`` uint8 for label files.

    Raises:
        DataError: the file cannot be read, is not valid gzip, or is not a valid IDX file (bad
            magic, unknown type code, truncated header, truncated data or trailing bytes). The
            message starts with the file's name. No other exception escapes.
    """
    label = _describe_source(source, name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise DataError(f"{label}: file not found") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{label}: cannot read file: {exc}") from exc

    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except EOFError:
            raise DataError(
                f"{label}: truncated gzip data: the compressed stream ends early "
                "(incomplete download?)"
            ) from None
        except (OSError, zlib.error, ValueError) as exc:
            raise DataError(f"{label}: corrupt gzip data: {exc}") from exc
    return _decode(data, label)


def _decode(data: bytes, label: str) -> npt.NDArray[Any]:
    if len(data) < 4:
        raise DataError(
            f"{label}: truncated header: expected at least 4 bytes (the IDX magic number), "
            f"found {len(data)}"
        )
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{label}: bad magic number 0x{data[:4].hex().upper()}: an IDX file starts with two "
            "zero bytes, a type code and the number of dimensions (e.g. 0x00000803 for uint8 "
            "images); is this an IDX file?"
        )
    code, ndim = data[2], data[3]
    dtype = IDX_DTYPES.get(code)
    if dtype is None:
        raise DataError(
            f"{label}: unknown IDX data type code 0x{code:02X}; expected one of {_ACCEPTED_CODES}"
        )
    if not 1 <= ndim <= MAX_NDIM:
        raise DataError(
            f"{label}: bad number of dimensions {ndim} in the header; expected 1 to {MAX_NDIM}"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{label}: truncated header: {ndim} dimensions need {header_len} header bytes, "
            f"found {len(data)}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = math.prod(shape)
    expected = count * dtype.itemsize
    found = len(data) - header_len
    what = f"{np.dtype(dtype).newbyteorder('=').name} data for shape {shape}"
    if found < expected:
        raise DataError(f"{label}: truncated: expected {expected} bytes of {what}, found {found}")
    if found > expected:
        raise DataError(
            f"{label}: trailing bytes: expected {expected} bytes of {what}, found {found} "
            f"({found - expected} extra)"
        )
    native = dtype.newbyteorder("=")
    if count == 0:
        return np.zeros(shape, dtype=native)
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=header_len)
    # astype copies: the result owns its memory, is writable and in native byte order.
    return flat.astype(native, copy=True).reshape(shape)


def encode_idx(array: npt.ArrayLike, *, compress: bool = False) -> bytes:
    """Encode an array as IDX bytes (gzip-compressed when ``compress``).

    The array may have any shape with 1 to 32 dimensions and one of the IDX dtypes (uint8,
    int8, int16, int32, float32, float64). The gzip header has mtime 0, so the output is
    deterministic.

    Raises:
        DataError: the dtype or the number of dimensions cannot be stored as IDX.
    """
    arr = np.asarray(array)
    code = next(
        (c for c, dt in IDX_DTYPES.items() if dt.newbyteorder("=") == arr.dtype.newbyteorder("=")),
        None,
    )
    if code is None:
        accepted = ", ".join(_CODE_NAMES.values())
        raise DataError(f"cannot store dtype {arr.dtype} as IDX; supported dtypes: {accepted}")
    if not 1 <= arr.ndim <= MAX_NDIM:
        raise DataError(
            f"cannot store a {arr.ndim}-dimensional array as IDX; expected 1 to {MAX_NDIM} "
            "dimensions"
        )
    if any(size >= 2**32 for size in arr.shape):
        raise DataError(f"cannot store shape {arr.shape} as IDX: each size must be < 2**32")
    header = bytes([0, 0, code, arr.ndim]) + b"".join(size.to_bytes(4, "big") for size in arr.shape)
    payload = np.ascontiguousarray(arr, dtype=IDX_DTYPES[code]).tobytes()
    raw = header + payload
    return gzip.compress(raw, compresslevel=6, mtime=0) if compress else raw


def write_idx(path: str | os.PathLike[str], array: npt.ArrayLike, *, compress: bool) -> Path:
    """Write ``array`` to ``path`` as an IDX file, gzip-compressed when ``compress``.

    Returns:
        The path written.

    Raises:
        DataError: the array cannot be stored as IDX, or the file cannot be written.
    """
    out = Path(path)
    data = encode_idx(array, compress=compress)
    try:
        out.write_bytes(data)
    except OSError as exc:
        raise DataError(f"{out}: cannot write file: {exc}") from exc
    return out
