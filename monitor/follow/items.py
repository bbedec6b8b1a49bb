"""What the follower is told (streams, settings) and what it hands on (items, positions).

Plain frozen values: the follow stage's whole interface to the rest of the
sidecar. `Data`, `Flush` and `End` flow out of `Follower.poll`; `Position` is
what the checkpoint stores of one followed file.
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.follow.identity import Identity


@dataclass(frozen=True)
class StreamSpec:
    """A named stream: the paths or globs whose files are read as one source."""

    name: str
    paths: tuple[str, ...]


@dataclass(frozen=True)
class FollowSettings:
    start_at: str = "end"  # first start ever: "end" skips what the files already hold
    read_chunk_bytes: int = 1 << 20
    max_read_per_pass: int = 16 << 20  # per file, so one huge backlog cannot starve the others
    partial_line_flush_seconds: float = 5.0
    rotated_close_idle_seconds: float = 86400.0
    max_files_per_stream: int = 256


@dataclass(frozen=True)
class Position:
    """Where reading of one file stands: what the checkpoint stores.

    `path` is the name the file was found under (a symlink stays a symlink);
    `real_path` is where the file itself was when last looked at, so a file
    behind a swapped symlink (Kubernetes' `..data`) is found again after a restart.
    """

    stream: str
    path: str
    identity: Identity
    offset: int
    size: int = 0  # the file's size when last looked at: offset == size means read to its end
    real_path: str = ""


@dataclass(frozen=True)
class Extent:
    """What was read of one file, for the self-audit: its bytes [0, offset) at `path`, if the
    file there still is `identity`. `serial` 0: a file known, not followed (closed)."""

    stream: str
    path: str
    identity: Identity
    offset: int
    serial: int


@dataclass(frozen=True)
class Data:
    stream: str
    file: int  # serial of the followed file: one scanner (and partial line) per serial
    data: bytes
    source: str = ""  # which content the bytes are from (`identity.source_of` its head): the self-audit's


@dataclass(frozen=True)
class Flush:
    stream: str
    file: int


@dataclass(frozen=True)
class End:
    stream: str
    file: int
    reason: str  # rotated | deleted | truncated | error


Item = Data | Flush | End
