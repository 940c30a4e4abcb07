"""IDX reading and writing: round trips, every kind of damage, and a fuzz property."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from forwardforward.data.idx import encode_idx, read_idx, write_idx
from forwardforward.errors import DataError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def _images(n: int = 5) -> np.ndarray:
    return np.arange(n * 28 * 28, dtype=np.uint32).reshape(n, 28, 28).astype(np.uint8)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_file(tmp_path: Path, compress: bool, dtype: type) -> None:
    arr: np.ndarray = (np.arange(2 * 3 * 4) - 7).astype(dtype).reshape(2, 3, 4)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    write_idx(path, arr, compress=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype)
    assert out.dtype.isnative
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable


def test_mnist_style_header(tmp_path: Path) -> None:
    raw = encode_idx(_images(2))
    # uint8, 3 dimensions: 0x00000803, then 2, 28, 28 big-endian.
    assert raw[:16] == bytes.fromhex("00000803000000020000001c0000001c")
    labels = encode_idx(np.array([3, 1, 4], dtype=np.uint8))
    assert labels[:8] == bytes.fromhex("0000080100000003")
    assert len(labels) == 11


def test_read_from_bytes_and_big_endian_values() -> None:
    raw = encode_idx(np.array([1, -2, 70000], dtype=np.int32))
    assert raw[8:] == bytes.fromhex("00000001fffffffe00011170")
    np.testing.assert_array_equal(read_idx(raw), [1, -2, 70000])
    np.testing.assert_array_equal(read_idx(gzip.compress(raw)), [1, -2, 70000])


def test_empty_dimension() -> None:
    out = read_idx(encode_idx(np.zeros((0, 28, 28), dtype=np.uint8)))
    assert out.shape == (0, 28, 28)


def _expect(data: bytes, *fragments: str, name: str = "mnist/train-images-idx3-ubyte.gz") -> str:
    with pytest.raises(DataError) as info:
        read_idx(data, name=name)
    msg = str(info.value)
    assert msg.startswith(name + ": ")
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


def test_wrong_magic() -> None:
    raw = bytearray(encode_idx(_images()))
    raw[0] = 0x12
    _expect(bytes(raw), "bad magic number 0x12000803")


def test_unknown_type_code() -> None:
    raw = bytearray(encode_idx(_images()))
    raw[2] = 0x0A
    _expect(bytes(raw), "unknown IDX data type code 0x0A", "0x08 (uint8)", "0x0E (float64)")


def test_zero_dimensions() -> None:
    _expect(b"\x00\x00\x08\x00", "bad number of dimensions 0")


def test_truncated_header() -> None:
    raw = encode_idx(_images())
    _expect(raw[:10], "truncated header", "16 header bytes, found 10")
    _expect(raw[:3], "truncated header", "found 3")
    _expect(b"", "truncated header")


def test_truncated_payload() -> None:
    raw = encode_idx(_images(60))
    msg = _expect(raw[: 16 + 1000], "truncated: expected 47040 bytes", "found 1000")
    assert "(60, 28, 28)" in msg


def test_trailing_bytes() -> None:
    raw = encode_idx(_images(2))
    _expect(raw + b"\x00\x01\x02", "trailing bytes", "3 extra")


def test_truncated_gzip() -> None:
    gz = encode_idx(_images(50), compress=True)
    _expect(gz[: len(gz) // 2], "truncated gzip")
    _expect(gz[:-4], "gzip")  # missing part of the trailer


def test_corrupt_gzip() -> None:
    gz = bytearray(encode_idx(_images(50), compress=True))
    gz[len(gz) // 2] ^= 0xFF
    _expect(bytes(gz), "gzip")
    _expect(b"\x1f\x8b" + b"\x00" * 30, "gzip")


def test_truncated_payload_inside_gzip(tmp_path: Path) -> None:
    # A valid gzip stream whose IDX content is cut short: the IDX check must catch it.
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(encode_idx(_images(10))[:-100]))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: truncated: expected 7840"):
        read_idx(path)


def test_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.gz"
    with pytest.raises(DataError, match=r"nope\.gz: file not found"):
        read_idx(path)
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path)  # a directory


def test_encode_rejects_unsupported() -> None:
    with pytest.raises(DataError, match="float16"):
        encode_idx(np.zeros(3, dtype=np.float16))
    with pytest.raises(DataError, match="0-dimensional"):
        encode_idx(np.uint8(3))


# ------------------------------------------------------------------------------------------
# Properties


@st.composite
def idx_arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5))
    return draw(hnp.arrays(dtype=dtype, shape=shape))


@settings(max_examples=150, deadline=None)
@given(arr=idx_arrays(), compress=st.booleans())
def test_property_round_trip(arr: np.ndarray, compress: bool) -> None:
    out = read_idx(encode_idx(arr, compress=compress))
    assert out.dtype == arr.dtype and out.shape == arr.shape
    assert out.tobytes() == np.ascontiguousarray(arr).tobytes()  # exact, NaNs included


def _check_never_crashes(data: bytes) -> None:
    try:
        out = read_idx(data, name="fuzz")
    except DataError as exc:
        assert str(exc).startswith("fuzz: ")
    else:
        assert isinstance(out, np.ndarray)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_property_random_bytes(data: bytes) -> None:
    _check_never_crashes(data)
    _check_never_crashes(b"\x00\x00" + data)
    _check_never_crashes(gzip.compress(data))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    arr=idx_arrays(),
    compress=st.booleans(),
    mutation=st.sampled_from(["flip", "truncate", "extend", "header"]),
    position=st.integers(min_value=0, max_value=10_000),
    value=st.integers(min_value=1, max_value=255),
    extra=st.binary(min_size=1, max_size=20),
)
def test_property_mutated_idx(
    arr: np.ndarray, compress: bool, mutation: str, position: int, value: int, extra: bytes
) -> None:
    data = bytearray(encode_idx(arr, compress=compress))
    if mutation == "flip":
        data[position % len(data)] ^= value
    elif mutation == "truncate":
        del data[position % len(data) :]
    elif mutation == "extend":
        data += extra
    else:  # overwrite a header byte with an arbitrary value, e.g. a huge dimension size
        data[position % min(len(data), 24)] = value
    _check_never_crashes(bytes(data))
