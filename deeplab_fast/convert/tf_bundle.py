"""A reader of TensorFlow's checkpoint format (the "tensor bundle" of tf.train.Saver / tf.train.Checkpoint),
written from the format's description, without TensorFlow.

A checkpoint `PREFIX` is `PREFIX.index` plus `PREFIX.data-SSSSS-of-NNNNN` shards:

- `.index` is a sorted string table (LevelDB's SSTable layout): data blocks of prefix-compressed key/value
  entries with a restart array, an index block pointing at them, and a 48-byte footer (two block handles and
  a magic number). Each block is followed by a compression byte and a masked CRC-32C. The key "" holds a
  BundleHeaderProto (shard count, endianness); every other key is a tensor name whose value is a
  BundleEntryProto (dtype, shape, shard, offset, size, CRC-32C of the bytes).
- the data shards hold each tensor's bytes, row-major, little-endian (a big-endian bundle is refused).

The tensors' CRC-32C is not verified (pure Python is too slow for 165 MB); their sizes are, so a truncated shard
is an error. Only what checkpoints of TensorFlow 1 and 2 use is read: uncompressed tables, whole (unsliced)
tensors of the numeric dtypes and of strings. Anything else is a ValueError that names the file and what was
found.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_BLOCK_TRAILER_LEN = 5  # compression type byte + masked CRC-32C

# TensorFlow DataType enum -> torch dtype (types.proto); DT_STRING (7) is read as a list of bytes
_DTYPES = {
    1: torch.float32,
    2: torch.float64,
    3: torch.int32,
    4: torch.uint8,
    5: torch.int16,
    6: torch.int8,
    9: torch.int64,
    10: torch.bool,
    14: torch.bfloat16,
    17: torch.uint16,
    19: torch.float16,
    22: torch.uint32,
    23: torch.uint64,
}
_DT_STRING = 7


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`, as LevelDB and TensorFlow compute it (pure Python: small data only)."""
    c = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _unmask_crc(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the base-128 varint at buf[pos]."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """[(field number, value)] of a serialized protobuf message: ints for varint/fixed fields, bytes for
    length-delimited ones. Enough for the few messages a bundle holds."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 5:
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value = bytes(buf[pos : pos + length])
            if len(value) != length:
                raise ValueError("truncated length-delimited field")
            pos += length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, value))
    return out


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor of a bundle lives (a BundleEntryProto): TensorFlow dtype number, shape, shard, byte
    offset and size in that shard, CRC-32C of its bytes, and whether it is stored in slices (partitioned)."""

    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc: int
    sliced: bool


def _parse_entry(value: bytes) -> TensorEntry:
    dtype, shape, shard, offset, size, crc, sliced = 0, (), 0, 0, 0, 0, False
    for number, v in _proto_fields(value):
        if number == 1:
            dtype = int(v)
        elif number == 2:
            dims = []
            for n, dim in _proto_fields(v):  # TensorShapeProto: repeated Dim dim = 2
                if n == 2:
                    size_fields = [int(x) for k, x in _proto_fields(dim) if k == 1]
                    dims.append(_signed64(size_fields[-1]) if size_fields else 0)
                elif n == 3 and v:
                    raise ValueError("a tensor of unknown rank")
            shape = tuple(dims)
        elif number == 3:
            shard = int(v)
        elif number == 4:
            offset = int(v)
        elif number == 5:
            size = int(v)
        elif number == 6:
            crc = int(v)
        elif number == 7:
            sliced = True
    return TensorEntry(dtype, shape, shard, offset, size, crc, sliced)


def _read_block(data: bytes, offset: int, size: int, path: Path) -> bytes:
    end = offset + size
    if end + _BLOCK_TRAILER_LEN > len(data):
        raise ValueError(f"{str(path)!r}: a table block runs past the end of the file (truncated index?)")
    block = data[offset:end]
    kind = data[end]
    if kind != 0:
        raise ValueError(f"{str(path)!r}: compressed table blocks (type {kind}) are not supported")
    stored = struct.unpack_from("<I", data, end + 1)[0]
    if crc32c(block + data[end : end + 1]) != _unmask_crc(stored):
        raise ValueError(f"{str(path)!r}: checksum mismatch in a table block (corrupt index file)")
    return block


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of one table block (prefix-compressed keys, restart array at the end)."""
    if len(block) < 4:
        raise ValueError("table block too short")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise ValueError("bad restart count in a table block")
    entries: list[tuple[bytes, bytes]] = []
    key = b""
    pos = 0
    while pos < limit:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + non_shared + value_len > limit:
            raise ValueError("corrupt entry in a table block")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos : pos + value_len]))
        pos += value_len
    return entries


def read_index(path: str | os.PathLike) -> tuple[dict[str, int | bool], dict[str, TensorEntry]]:
    """Parse a bundle's `.index` file: (header {"num_shards", "big_endian"}, {tensor name: TensorEntry})."""
    p = Path(path)
    data = p.read_bytes()
    if len(data) < _FOOTER_LEN:
        raise ValueError(f"{str(p)!r} is too short to be a TensorFlow checkpoint index ({len(data)} bytes)")
    footer = data[-_FOOTER_LEN:]
    if struct.unpack_from("<Q", footer, _FOOTER_LEN - 8)[0] != _TABLE_MAGIC:
        raise ValueError(f"{str(p)!r} is not a TensorFlow checkpoint index (no table magic number at its end)")
    try:
        pos = 0
        _, pos = _varint(footer, pos)  # metaindex handle: TensorFlow writes an empty meta index
        _, pos = _varint(footer, pos)
        index_offset, pos = _varint(footer, pos)
        index_size, pos = _varint(footer, pos)
        entries: list[tuple[bytes, bytes]] = []
        for _, handle in _block_entries(_read_block(data, index_offset, index_size, p)):
            offset, hp = _varint(handle, 0)
            size, _ = _varint(handle, hp)
            entries.extend(_block_entries(_read_block(data, offset, size, p)))
    except (ValueError, struct.error) as exc:
        raise ValueError(f"{str(p)!r}: corrupt TensorFlow checkpoint index: {exc}") from None
    header: dict[str, int | bool] = {"num_shards": 1, "big_endian": False}
    tensors: dict[str, TensorEntry] = {}
    for key, value in entries:
        if key == b"":
            for number, v in _proto_fields(value):
                if number == 1:
                    header["num_shards"] = int(v)
                elif number == 2:
                    header["big_endian"] = int(v) == 1
            continue
        try:
            tensors[key.decode("utf-8")] = _parse_entry(value)
        except ValueError as exc:
            raise ValueError(f"{str(p)!r}: tensor {key!r}: {exc}") from None
    return header, tensors


def _read_strings(raw: bytes, count: int) -> list[bytes]:
    # varint64 lengths, a CRC-32C of them (4 bytes), then the bytes back to back
    lengths, pos = [], 0
    for _ in range(count):
        n, pos = _varint(raw, pos)
        lengths.append(n)
    pos += 4
    out = []
    for n in lengths:
        out.append(bytes(raw[pos : pos + n]))
        pos += n
    return out


class TensorBundle:
    """An open TensorFlow checkpoint: `names()`, `shape(name)`, `read(name)`.

    Args:
        prefix: the checkpoint prefix (the path without `.index`), e.g. "model.ckpt" for "model.ckpt.index" and
            "model.ckpt.data-00000-of-00001".
    Raises:
        FileNotFoundError when the index or a data shard is missing; ValueError for a file that is not a
        readable bundle (named).
    """

    def __init__(self, prefix: str | os.PathLike) -> None:
        self.prefix = Path(prefix)
        index = Path(str(self.prefix) + ".index")
        if not index.is_file():
            raise FileNotFoundError(f"no TensorFlow checkpoint index {str(index)!r}")
        header, self.entries = read_index(index)
        if header["big_endian"]:
            raise ValueError(f"{str(index)!r}: a big-endian checkpoint; only little-endian ones are supported")
        n = int(header["num_shards"])
        self.shards = [Path(f"{self.prefix}.data-{i:05d}-of-{n:05d}") for i in range(n)]
        for shard in self.shards:
            if not shard.is_file():
                raise FileNotFoundError(f"TensorFlow checkpoint {str(self.prefix)!r}: data file {str(shard)!r} missing")

    def names(self) -> list[str]:
        """Every tensor name, sorted."""
        return sorted(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of tensor `name` (KeyError naming it when absent)."""
        return self._entry(name).shape

    def _entry(self, name: str) -> TensorEntry:
        entry = self.entries.get(name)
        if entry is None:
            raise KeyError(f"TensorFlow checkpoint {str(self.prefix)!r} has no tensor {name!r}")
        return entry

    def read(self, name: str) -> torch.Tensor | list[bytes]:
        """Tensor `name` as a CPU torch tensor of its dtype and shape (a string tensor: flat list of bytes)."""
        entry = self._entry(name)
        where = f"TensorFlow checkpoint {str(self.prefix)!r}, tensor {name!r}"
        if entry.sliced:
            raise ValueError(f"{where}: stored in slices (a partitioned variable); not supported")
        if not 0 <= entry.shard < len(self.shards):
            raise ValueError(f"{where}: shard {entry.shard} of {len(self.shards)}")
        with open(self.shards[entry.shard], "rb") as f:
            f.seek(entry.offset)
            raw = f.read(entry.size)
        if len(raw) != entry.size:
            raise ValueError(f"{where}: the data file ends before the tensor does (truncated checkpoint?)")
        count = int(np.prod(entry.shape, dtype=np.int64))
        if entry.dtype == _DT_STRING:
            return _read_strings(raw, count)
        dtype = _DTYPES.get(entry.dtype)
        if dtype is None:
            raise ValueError(f"{where}: TensorFlow dtype number {entry.dtype} is not supported")
        itemsize = torch.empty((), dtype=dtype).element_size()
        if count * itemsize != entry.size:
            raise ValueError(f"{where}: {entry.size} bytes for shape {entry.shape} of {dtype}")
        if count == 0:
            return torch.empty(entry.shape, dtype=dtype)
        return torch.frombuffer(bytearray(raw), dtype=dtype).reshape(entry.shape)
