"""One-shot reading of existing log files, plain or gzip-compressed.

`monitor scan` and `monitor verify` read old logs, including the `.gz` files
logrotate leaves behind. Compression is recognised by the file's magic bytes,
not its name, so a misnamed file is still read right.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

GZIP_MAGIC = b"\x1f\x8b"


class LogReadError(Exception):
    """A file could not be read (to the end); the message names the file and the cause."""


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def read_chunks(path: Path, chunk_bytes: int, on_progress: Callable[[int], None] = lambda n: None) -> Iterator[bytes]:
    """Yield the file's (decompressed) bytes in chunks; `on_progress` gets compressed bytes consumed."""
    try:
        compressed = is_gzip(path)
        raw = open(path, "rb")  # noqa: SIM115 (closed by the with-block below)
    except IsADirectoryError:
        raise LogReadError(f"{path}: is a directory, not a log file") from None
    except FileNotFoundError:
        raise LogReadError(f"{path}: no such file") from None
    except OSError as exc:
        raise LogReadError(f"{path}: cannot open: {exc.strerror or exc}") from None
    with raw:
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        position = 0
        while True:
            try:
                chunk = stream.read(chunk_bytes)
            except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
                raise LogReadError(
                    f"{path}: compressed data is corrupt or cut short after {position} bytes ({exc}); "
                    "the lines before that were counted"
                ) from None
            except OSError as exc:
                raise LogReadError(f"{path}: read failed after {position} bytes: {exc.strerror or exc}") from None
            if not chunk:
                return
            position += len(chunk)
            on_progress(raw.tell())
            yield chunk
