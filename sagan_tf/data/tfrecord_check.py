"""Finds truncated or corrupt TFRecord shards.

tf.data reports a damaged shard as "corrupted record at <offset>" without
naming the file. `find_damaged_shards` walks the record headers of each
shard (seeking past the payloads) to the reported offset and checks the
record there, so the error can name the shard.

TFRecord framing, per record: uint64 length, uint32 masked CRC-32C of the
length, `length` bytes of data, uint32 masked CRC-32C of the data (all
little-endian).

Usage: python -m sagan_tf.data.tfrecord_check SHARD_OR_FOLDER [...]
"""

import fnmatch
import os
import re
import struct
import sys

_HEADER_BYTES = 12
_FOOTER_BYTES = 4
_MASK_DELTA = 0xA282EAD8
# Shard names looked for in a folder (those of `records.py`).
_SHARD_PATTERNS = ("*.tfrecords", "*.tfrecord", "*-of-*")


def _make_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def crc32c(data):
    """CRC-32C (Castagnoli) of `data` (bytes)."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    """The masked CRC that TFRecord files store."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _record_is_sound(path, index):
    """Whether record `index` of `path` passes TensorFlow's checks.

    tf.data's skip reads only the headers of the skipped records, so this
    checks one record's data checksum in C++ (pure Python CRC-32C would
    take ~30 ms per 49 KB record).
    """
    import tensorflow as tf

    try:
        for _ in tf.data.TFRecordDataset(path).skip(index).take(1):
            pass
    except tf.errors.DataLossError:
        return False
    return True


def _first_error_offset(path):
    """Reads the whole shard with TensorFlow; the offset it reports for the
    first damaged record, or None when the shard is sound."""
    import tensorflow as tf

    try:
        for _ in tf.data.TFRecordDataset(path):
            pass
    except tf.errors.DataLossError as error:
        found = re.search(r"record at (\d+)", error.message)
        return int(found.group(1)) if found else 0
    return None


def check_shard(path, offset=None):
    """Checks the record framing of one shard.

    Args:
        path: the TFRecord file.
        offset: the byte offset that TensorFlow reported for a damaged
            record. The record headers are walked up to it and the record
            that starts there (or whose data starts there) is checked; a
            shard with no record boundary at `offset` passes, unless it ends
            or breaks before reaching it. If None, the whole shard is read.

    Returns:
        None if the shard is sound (at `offset`), else a sentence that says
        what is wrong and at which byte.
    """
    if offset is None:
        offset = _first_error_offset(path)
        if offset is None:
            return None
        return check_shard(path, offset) or f"corrupt near byte {offset}"
    size = os.path.getsize(path)
    position = index = 0
    with open(path, "rb") as stream:
        while position < size and position <= offset:
            stream.seek(position)
            header = stream.read(_HEADER_BYTES)
            if len(header) < _HEADER_BYTES:
                return (
                    f"truncated: the record header at byte {position} is cut"
                    f" off ({size} bytes in the file)"
                )
            (length,) = struct.unpack("<Q", header[:8])
            (length_crc,) = struct.unpack("<I", header[8:])
            if masked_crc32c(header[:8]) != length_crc:
                return f"corrupt: bad header checksum at byte {position}"
            end = position + _HEADER_BYTES + length + _FOOTER_BYTES
            if end > size:
                return (
                    f"truncated: the record at byte {position} needs"
                    f" {end - position} bytes but the file ends at {size}"
                )
            # TensorFlow reports data-checksum errors at the data's offset,
            # 12 bytes after the record start.
            if offset in (position, position + _HEADER_BYTES):
                if not _record_is_sound(path, index):
                    return f"corrupt: bad data checksum at byte {position}"
                return None
            position = end
            index += 1
    return None


def find_damaged_shards(paths, offset=None):
    """Returns [(path, problem)] for each damaged shard among `paths`."""
    damaged = []
    for path in paths:
        problem = check_shard(path, offset)
        if problem is not None:
            damaged.append((path, problem))
    return damaged


def main(argv):
    """Checks every shard named (or found in a named folder) in full."""
    paths = []
    for arg in argv[1:]:
        if os.path.isdir(arg):
            paths.extend(
                os.path.join(arg, name)
                for name in sorted(os.listdir(arg))
                if any(fnmatch.fnmatch(name, p) for p in _SHARD_PATTERNS)
                and not name.startswith(".")
                and os.path.isfile(os.path.join(arg, name))
            )
        else:
            paths.append(arg)
    if not paths:
        print(__doc__.strip().splitlines()[-1])
        return 2
    damaged = find_damaged_shards(paths)
    for path, problem in damaged:
        print(f"{path}: {problem}")
    print(f"{len(paths)} shard(s) checked, {len(damaged)} damaged.")
    return 1 if damaged else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
