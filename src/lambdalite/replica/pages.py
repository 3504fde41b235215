"""Pages of a SQLite database file: checksums, the WAL reader, and in-place writes.

The database checksum is the XOR of a 128-bit BLAKE2b digest of every page
(its number and its bytes). XOR makes it incremental: a commit that changes
three pages updates the checksum from those three pages' old and new bytes, so
verifying a delta costs O(change), not O(database).

:class:`PageHashes` keeps the digest of every page of the version the local
copy holds (16 bytes a page: 4 MiB for a 1 GiB database). With it the engine
checks any page it is about to trust (the pre-image of a page a commit changed)
against the published version without reading the rest of the database, and
computes the checksum after a delta without reading the local file at all.

The WAL reader follows the file format of https://sqlite.org/fileformat2.html#walformat:
a 32-byte header, then frames of a 24-byte header and one page. A frame belongs
to the current WAL generation when its salts equal the header's; a frame whose
"database size" field is non-zero ends a transaction. Frame checksums are not
recomputed (a pure-Python Fletcher loop is too slow for large commits): the
WAL is local, written by SQLite moments before we read it, and every page we
publish is covered by the database checksum that readers verify.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

__all__ = [
    "PageHashes",
    "WalContents",
    "WalFrame",
    "WalPosition",
    "checksum_hex",
    "copy_in_place",
    "file_checksum",
    "frame_pages",
    "lock_byte_page",
    "page_hash",
    "read_page",
    "read_wal",
    "write_pages",
]

_WAL_HEADER = struct.Struct(">IIIIIIII")
_LOCK_BYTE_OFFSET = 0x40000000  # SQLite never writes the page holding this byte (1 GiB)
_FRAME_HEADER = struct.Struct(">IIIIII")
_WAL_MAGIC = (0x377F0682, 0x377F0683)


def lock_byte_page(page_size: int) -> int:
    """The page SQLite never writes: the one holding the byte at offset 1 GiB."""
    return _LOCK_BYTE_OFFSET // page_size + 1


def page_digest(pgno: int, data: bytes) -> bytes:
    """The 128-bit digest of one page (its number and its bytes)."""
    return hashlib.blake2b(pgno.to_bytes(4, "big") + data, digest_size=16).digest()


def page_hash(pgno: int, data: bytes) -> int:
    """The 128-bit digest of one page, as an integer (XOR-able)."""
    return int.from_bytes(page_digest(pgno, data), "big")


class PageHashes:
    """The digest of every page of one version of a database, and their XOR (its checksum).

    ``count`` is the number of pages. Nothing here reads a file except
    :meth:`of_file`; callers hand in page contents and get yes/no answers or
    the checksum a change would produce.
    """

    __slots__ = ("_buf", "checksum", "count")

    _SIZE = 16

    def __init__(self) -> None:
        self._buf = bytearray()
        self.count = 0
        self.checksum = 0

    @classmethod
    def of_file(cls, path: str, page_size: int) -> PageHashes:
        """The digests of every page of database file ``path``."""
        out = cls()
        with open(path, "rb") as f:
            while True:
                block = f.read(page_size * 256)
                if not block:
                    break
                for off in range(0, len(block), page_size):
                    out.count += 1
                    digest = page_digest(out.count, block[off : off + page_size])
                    out._buf += digest
                    out.checksum ^= int.from_bytes(digest, "big")
        return out

    def copy(self) -> PageHashes:
        out = PageHashes()
        out._buf = bytearray(self._buf)
        out.count, out.checksum = self.count, self.checksum
        return out

    def digest(self, pgno: int) -> bytes:
        """The digest of page ``pgno`` (1-based, at most ``count``)."""
        if not 1 <= pgno <= self.count:
            raise IndexError(f"page {pgno} is not in a database of {self.count} pages")
        off = (pgno - 1) * self._SIZE
        return bytes(self._buf[off : off + self._SIZE])

    def matches(self, pgno: int, data: bytes) -> bool:
        """Whether ``data`` is page ``pgno`` of this version."""
        return 1 <= pgno <= self.count and page_digest(pgno, data) == self.digest(pgno)

    def missing_growth(self, pages: Iterable[int], new_count: int, page_size: int) -> list[int]:
        """Pages a change to ``new_count`` pages adds without carrying (a real commit has none,
        but for SQLite's lock-byte page at 1 GiB, which it never writes: it stays zeros)."""
        carried = set(pages)
        carried.add(lock_byte_page(page_size))
        missing: list[int] = []
        p = self.count + 1
        while p <= new_count and len(missing) < 10:  # stops early however large new_count is
            if p not in carried:
                missing.append(p)
            p += 1
        return missing

    def checksum_after(self, pages: Mapping[int, bytes], new_count: int, page_size: int) -> int:
        """The checksum once ``pages`` are written and the size set to ``new_count`` pages.

        Every page past the current end must be in ``pages``
        (:meth:`missing_growth` says which are not); ValueError otherwise.
        """
        if self.missing_growth(pages, new_count, page_size):
            raise ValueError("the change grows the database without carrying the new pages")
        acc = self.checksum
        lock_page = lock_byte_page(page_size)
        if self.count < lock_page <= new_count and lock_page not in pages:
            acc ^= page_hash(lock_page, bytes(page_size))
        for p in range(new_count + 1, self.count + 1):  # cut off
            acc ^= int.from_bytes(self.digest(p), "big")
        for p, data in pages.items():
            if p > new_count:
                continue
            if p <= self.count:
                acc ^= int.from_bytes(self.digest(p), "big")
            acc ^= page_hash(p, data)
        return acc

    def apply(self, pages: Mapping[int, bytes], new_count: int, page_size: int) -> None:
        """Record ``pages`` and the new size (the same precondition as :meth:`checksum_after`)."""
        checksum = self.checksum_after(pages, new_count, page_size)
        lock_page = lock_byte_page(page_size)
        if self.count < lock_page <= new_count and lock_page not in pages:
            pages = {**pages, lock_page: bytes(page_size)}
        if new_count < self.count:
            del self._buf[new_count * self._SIZE :]
        elif new_count > self.count:
            self._buf += bytes((new_count - self.count) * self._SIZE)
        self.count = new_count
        for p, data in pages.items():
            if p <= new_count:
                off = (p - 1) * self._SIZE
                self._buf[off : off + self._SIZE] = page_digest(p, data)
        self.checksum = checksum


def checksum_hex(value: int) -> str:
    return f"{value:032x}"


def file_checksum(path: str, page_size: int) -> tuple[int, int]:
    """(checksum, page_count) of a whole database file."""
    acc = 0
    count = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(page_size * 256)
            if not block:
                break
            for off in range(0, len(block), page_size):
                count += 1
                acc ^= page_hash(count, block[off : off + page_size])
    return acc, count


def read_page(f: BinaryIO, pgno: int, page_size: int) -> bytes:
    """Page ``pgno`` (1-based) of an open binary file; zeros past the end."""
    f.seek((pgno - 1) * page_size)
    data = f.read(page_size)
    if len(data) < page_size:
        data = data + b"\0" * (page_size - len(data))
    return bytes(data)


def write_pages(
    path: str, pages: Mapping[int, bytes], page_count: int, page_size: int, *, fsync: bool = True
) -> None:
    """Write ``pages`` into the database file in place and cut it to ``page_count`` pages."""
    with open(path, "r+b" if os.path.exists(path) else "w+b") as f:
        for pgno in sorted(pages):
            if pgno > page_count:
                continue
            data = pages[pgno]
            if len(data) != page_size:
                raise ValueError(f"page {pgno} has {len(data)} bytes, expected {page_size}")
            f.seek((pgno - 1) * page_size)
            f.write(data)
        f.truncate(page_count * page_size)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


@dataclass(frozen=True, slots=True)
class WalFrame:
    index: int  # 0-based frame number
    pgno: int
    commit_size: int  # database size in pages after the commit, or 0
    offset: int  # file offset of the page data


@dataclass(frozen=True, slots=True)
class WalPosition:
    """Where the committed part of a WAL ends: its salts and frame count."""

    salts: tuple[int, int] | None
    committed: int

    @classmethod
    def empty(cls) -> WalPosition:
        return cls(None, 0)


@dataclass(frozen=True, slots=True)
class WalContents:
    page_size: int
    salts: tuple[int, int] | None
    frames: tuple[WalFrame, ...]  # committed frames only, in order

    @property
    def position(self) -> WalPosition:
        return WalPosition(self.salts, len(self.frames))

    def since(self, pos: WalPosition) -> tuple[WalFrame, ...]:
        """Frames committed after ``pos`` (all of them if the WAL restarted since)."""
        if pos.salts != self.salts:
            return self.frames
        return self.frames[pos.committed :]

    def before(self, pos: WalPosition) -> tuple[WalFrame, ...]:
        if pos.salts != self.salts:
            return ()
        return self.frames[: pos.committed]


def read_wal(path: str) -> WalContents:
    """The committed frames of the WAL file at ``path`` (empty if there is none)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with block below
    except FileNotFoundError:
        return WalContents(0, None, ())
    with f:
        header = f.read(_WAL_HEADER.size)
        if len(header) < _WAL_HEADER.size:
            return WalContents(0, None, ())
        magic, _version, page_size, _seq, salt1, salt2, _c1, _c2 = _WAL_HEADER.unpack(header)
        if magic not in _WAL_MAGIC:
            return WalContents(0, None, ())
        salts = (salt1, salt2)
        frames: list[WalFrame] = []
        committed = 0
        index = 0
        frame_size = _FRAME_HEADER.size + page_size
        while True:
            offset = _WAL_HEADER.size + index * frame_size
            f.seek(offset)
            fh = f.read(_FRAME_HEADER.size)
            if len(fh) < _FRAME_HEADER.size:
                break
            pgno, commit_size, s1, s2, _k1, _k2 = _FRAME_HEADER.unpack(fh)
            if (s1, s2) != salts or pgno == 0:
                break
            f.seek(0, os.SEEK_END)
            if f.tell() < offset + frame_size:
                break
            frames.append(WalFrame(index, pgno, commit_size, offset + _FRAME_HEADER.size))
            index += 1
            if commit_size:
                committed = index
        return WalContents(page_size, salts, tuple(frames[:committed]))


def frame_pages(wal_path: str, frames: Iterable[WalFrame], page_size: int) -> dict[int, bytes]:
    """The newest content of every page in ``frames``."""
    out: dict[int, bytes] = {}
    with open(wal_path, "rb") as f:
        for fr in frames:
            f.seek(fr.offset)
            out[fr.pgno] = f.read(page_size)
    return out


def copy_in_place(src: str, dst: str, page_size: int) -> None:
    """Overwrite database file ``dst`` with the image ``src`` (same inode), and fsync it."""
    with open(src, "rb") as inp, open(dst, "r+b") as out:
        for block in iter(lambda: inp.read(page_size * 256), b""):
            out.write(block)
        out.truncate(inp.tell())
        out.flush()
        os.fsync(out.fileno())
