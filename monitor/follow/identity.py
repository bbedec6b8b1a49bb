"""Identity: how a log file is recognised, whatever its name or size becomes.

A file is its device and inode plus a fingerprint of its first bytes: the
inode follows it through renames, the fingerprint tells a truncated-and-
rewritten file, a reused inode or a copy apart. A copy (copytruncate's) is
recognised by holding what we read of the original: the same head and the
same bytes just before our read offset.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import BinaryIO

from monitor.follow.fs import REAL, FileSystem

FINGERPRINT_BYTES = 1024
TAIL_BYTES = 64  # how much of what was read last is remembered, to notice a rewrite
# A shorter prefix is too likely to be shared by unrelated files to call one a copy of the other.
MIN_COPY_FINGERPRINT = 64
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", ".z", ".Z")


@dataclass(frozen=True)
class Identity:
    dev: int
    ino: int
    fp_len: int
    fp: str  # sha1 of the first fp_len bytes


def digest(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def identity_of(handle: BinaryIO, st: os.stat_result) -> Identity:
    head = os.pread(handle.fileno(), FINGERPRINT_BYTES, 0)
    return Identity(st.st_dev, st.st_ino, len(head), digest(head))


def source_of(head: bytes) -> str:
    """A short name for a file's content, the same for a copy and after a rename or a
    compression: the digest of its first MIN_COPY_FINGERPRINT bytes ("" while it has fewer)."""
    return digest(head[:MIN_COPY_FINGERPRINT])[:16] if len(head) >= MIN_COPY_FINGERPRINT else ""


def matches(head: bytes, identity: Identity) -> bool:
    """Does a file starting with `head` start with the fingerprinted bytes?"""
    return len(head) >= identity.fp_len and digest(head[: identity.fp_len]) == identity.fp


def read_head(path: str, fs: FileSystem = REAL) -> bytes | None:
    try:
        with fs.open(path) as f:
            return os.pread(f.fileno(), FINGERPRINT_BYTES, 0)
    except OSError:
        return None


def siblings(path: str, fs: FileSystem = REAL) -> list[str]:
    """Other uncompressed regular files in the same directory: where rotation puts a file."""
    return sorted(e.path for e in sibling_entries(path, fs))


def sibling_entries(path: str, fs: FileSystem = REAL) -> list[os.DirEntry]:
    """`siblings` as directory entries (name and inode without a stat)."""
    directory = os.path.dirname(path) or "."
    try:
        entries = list(fs.scandir(directory))
    except OSError:
        return []
    return [
        e
        for e in entries
        if e.path != path and not e.name.endswith(COMPRESSED_SUFFIXES) and e.is_file(follow_symlinks=False)
    ]


def holds_what_was_read(path: str, identity: Identity, offset: int, tail: bytes, fs: FileSystem = REAL) -> bool:
    """Is `path` another file holding what was read of the file `identity`, up to `offset`:
    the same head, `tail` just before the offset, and at least that long? Too little read
    (under 64 bytes) to tell a copy from a file that merely starts alike counts as no."""
    if identity.fp_len < MIN_COPY_FINGERPRINT:
        return False
    try:
        with fs.open(path) as f:
            return is_copy(f, os.fstat(f.fileno()), identity, offset, tail)
    except OSError:
        return False


def is_copy(handle: BinaryIO, st: os.stat_result, identity: Identity, offset: int, tail: bytes) -> bool:
    """`holds_what_was_read` for a file already open: decided on the handle, not on a name."""
    if identity.fp_len < MIN_COPY_FINGERPRINT:
        return False
    if (st.st_dev, st.st_ino) == (identity.dev, identity.ino) or st.st_size < offset:
        return False
    head = os.pread(handle.fileno(), FINGERPRINT_BYTES, 0)
    found = os.pread(handle.fileno(), len(tail), offset - len(tail))
    return matches(head, identity) and found == tail
