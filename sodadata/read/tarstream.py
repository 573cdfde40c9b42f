"""Tar archives read as streams (never extracted), with the one check ``tarfile`` leaves out: did the archive end?

In stream mode (``r|``, ``r|gz``) ``tarfile`` stops iterating *without an error* when the data stops at a member
boundary, inside a header block, or at a corrupt header: a tar cut short by an interrupted download or a bad
disk then reads as a smaller, valid tar, and every member after the cut is lost without a word. A complete
archive ends with an end-of-archive block of 512 zero bytes; :func:`check_end` looks at the block where
iteration stopped and raises :class:`~sodadata.read.recipe.ShardError` unless it is that block.

    with CheckedTar(fileobj, gzipped=True) as tar:   # gzipped: a .tar.gz
        for member in tar:                            # ends with check_end: ShardError if the tar did not end
            data = tar.read(member)
"""

from __future__ import annotations

import collections
import gzip
import tarfile
from collections.abc import Iterator
from typing import BinaryIO

from sodadata.read.recipe import ShardError

BLOCK = tarfile.BLOCKSIZE
# tarfile's stream reads RECORDSIZE (10 KiB) at a time, so the block where it stopped is always among the last
# RECORDSIZE + BLOCK bytes read; keep a comfortable margin.
TAIL_BYTES = 64 * 1024


class TailReader:
    """A read-only stream that counts the bytes read through it and keeps the last ``keep`` of them."""

    def __init__(self, fileobj: BinaryIO, keep: int = TAIL_BYTES) -> None:
        self.fileobj = fileobj
        self.keep = keep
        self.total = 0
        self._chunks: collections.deque[tuple[int, bytes]] = collections.deque()  # (offset, data)
        self._held = 0

    def read(self, size: int = -1) -> bytes:
        data = self.fileobj.read(size)
        if data:
            self._chunks.append((self.total, bytes(data)))
            self.total += len(data)
            self._held += len(data)
            while self._chunks and self._held - len(self._chunks[0][1]) >= self.keep:
                self._held -= len(self._chunks.popleft()[1])
        return data

    def bytes_at(self, offset: int, size: int) -> bytes | None:
        """The bytes at ``[offset, offset + size)`` as far as they were read, or ``None`` if no longer held."""
        if not self._chunks or offset < self._chunks[0][0]:
            return None
        out = bytearray()
        for start, data in self._chunks:
            end = start + len(data)
            if end <= offset or start >= offset + size:
                continue
            out += data[max(0, offset - start) : min(len(data), offset + size - start)]
        return bytes(out)


def check_end(tar: tarfile.TarFile, reader: TailReader) -> None:
    """Raise ``ShardError`` unless iteration over ``tar`` stopped at its end-of-archive block."""
    offset = tar.offset  # where tarfile tried to read the next header
    block = reader.bytes_at(offset, BLOCK)
    if block is None:
        raise ShardError(f"cannot check the end of the tar at byte {offset}: it was read past")
    if len(block) < BLOCK:
        raise ShardError(
            f"truncated tar: the data ends at byte {reader.total}, {'inside a member header' if block else 'after a member'}"
            f" at byte {offset}, without the end-of-archive block; members after the cut are missing"
        )
    if block.count(0) != BLOCK:
        raise ShardError(f"corrupt tar: no valid member header at byte {offset}; the members from there on cannot be read")


class CheckedTar:
    """A tar read as a stream, never extracted: iterating gives its members in archive order (directories passed
    over) and then checks that the archive ended (:func:`check_end`); :meth:`read` gives a member's data."""

    def __init__(self, fileobj: BinaryIO, gzipped: bool = False) -> None:
        # gzip decoded here rather than by tarfile ("r|gz") so that TailReader sees the tar bytes: check_end needs them
        self._reader = TailReader(gzip.GzipFile(fileobj=fileobj, mode="rb") if gzipped else fileobj)
        self._tar = tarfile.open(fileobj=self._reader, mode="r|")

    def __enter__(self) -> CheckedTar:
        return self

    def __exit__(self, *exc: object) -> None:
        self._tar.close()

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        for member in self._tar:
            if not member.isdir():
                yield member
        check_end(self._tar, self._reader)  # a tar cut at a member boundary would otherwise read as a smaller, valid tar

    def read(self, member: tarfile.TarInfo) -> bytes:
        """The data of a regular file member, the one iteration just gave (a stream cannot go back)."""
        return self._tar.extractfile(member).read()

