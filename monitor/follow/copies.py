"""Copies: is a file another followed file's copy, on its way to being one, or new?

copytruncate (and `cp`) make a copy of a followed file under another name. A
complete copy holds what was read of the original (the same head, the same bytes
just before the read offset): it holds no new lines and is never read from byte
0; if the original is then truncated, the follower reads the copy on from the
original's offset. A copy still being written holds, so far, no more than what
was read, and the same bytes as the original wherever both have them: nothing
about it is final yet, so it is looked at again on every pass until it is
complete, stops growing short, or turns out to be a file of its own.

Only files alike in their first `MIN_COPY_FINGERPRINT` bytes can be copies of each
other: the table indexes followed files by those bytes, so a candidate is
compared with a handful of files, not with every file followed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import BinaryIO, Literal

from monitor.follow.file import FollowedFile
from monitor.follow.identity import FINGERPRINT_BYTES, MIN_COPY_FINGERPRINT, TAIL_BYTES, digest, is_copy, matches

Verdict = Literal["copy", "maybe", "new"]


def verdict(handle: BinaryIO, st: os.stat_result, head: bytes, sources: Iterable[FollowedFile], path: str) -> Verdict:
    """What the file open as `handle` (its fstat `st`, first bytes `head`), found at `path`, is to
    the followed files `sources` (those alike in their first bytes): a copy of one, maybe one, or new.

    A file found under the name a source had (the source was renamed away, or the name points
    elsewhere now) is that name's next file, not a copy being written beside the source: it
    can only be a copy if it holds all that was read (logrotate's `copy`), never "maybe"."""
    undecided = False
    digests: dict[int, str] = {}  # the candidate's fingerprint at each length a source has
    for source in sources:
        identity = source.identity
        if (st.st_dev, st.st_ino) == (identity.dev, identity.ino) or identity.fp_len < MIN_COPY_FINGERPRINT:
            continue
        if len(head) >= identity.fp_len:
            if identity.fp_len not in digests:
                digests[identity.fp_len] = digest(head[: identity.fp_len])
            if digests[identity.fp_len] != identity.fp:
                continue  # starts otherwise: neither a copy nor one on its way
            if is_copy(handle, st, identity, source.offset, source.tail):
                return "copy"
        if path not in (source.path, source.first_path):
            undecided = undecided or _may_become_copy(handle, st, head, source)
    return "maybe" if undecided else "new"


def _may_become_copy(handle: BinaryIO, st: os.stat_result, head: bytes, source: FollowedFile) -> bool:
    """Shorter than what was read of `source` and alike where both have bytes: the source's
    fingerprint when the file is that long, else the bytes the source still holds."""
    size = st.st_size
    if size >= source.offset or len(head) < MIN_COPY_FINGERPRINT:
        return False
    if len(head) >= source.identity.fp_len:
        return matches(head, source.identity) and _same_end(handle, size, source)
    # Fewer bytes than the fingerprint covers: compare them with the source, if it still has them.
    return os.pread(source.handle.fileno(), len(head), 0) == head and _same_end(handle, size, source)


def _same_end(handle: BinaryIO, size: int, source: FollowedFile) -> bool:
    """The file's last bytes are the source's bytes at the same place, when the source still has
    them: a source truncated (or rewritten) since holds other bytes, and the head alone decides."""
    length = min(TAIL_BYTES, size)
    theirs = os.pread(source.handle.fileno(), length, size - length)
    if len(theirs) < length or not matches(os.pread(source.handle.fileno(), FINGERPRINT_BYTES, 0), source.identity):
        return True
    return theirs == os.pread(handle.fileno(), length, size - length)
