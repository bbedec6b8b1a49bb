"""State: the checkpoint file, written atomically and read back defensively.

One JSON document holds everything that must survive a restart together:
read positions, the counters' values and (later stages) pending checks. They
are saved in one write so that they always agree: after `kill -9` the
counters continue exactly where the positions say reading stopped.

Writes go to a temporary file, are fsynced, then renamed over the old file
(and the directory fsynced), so a crash leaves either the old or the new
checkpoint, never half of one. A file that is unreadable, not JSON, or of an
unknown version is reported, set aside for inspection, and the sidecar
starts fresh instead of crashing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_VERSION = 1
STATE_FILE = "state.json"


class StateStore:
    """Saves and loads the checkpoint in `directory`."""

    def __init__(self, directory: str | os.PathLike[str], clock=time.time) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE
        self._clock = clock
        self.saves = 0
        self.failures = 0

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none or it cannot be trusted (reported)."""
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("cannot read state file %s (%s); starting fresh", self.path, exc.strerror or exc)
            return None
        try:
            state = json.loads(text)
            if not isinstance(state, dict):
                raise ValueError("not a JSON object")
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"unknown state version {state.get('version')!r} (this build reads {STATE_VERSION})")
        except ValueError as exc:
            kept = self._set_aside()
            log.error(
                "state file %s is corrupt (%s); kept it as %s and starting fresh: counters restart at 0 "
                "and files are read from their end",
                self.path,
                exc,
                kept,
            )
            return None
        return state

    def save(self, state: dict[str, Any]) -> bool:
        """Write the state atomically; False (logged) if the disk refuses."""
        document = {"version": STATE_VERSION, "saved_at": self._clock(), **state}
        data = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        temporary = self.path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self.path)
            _fsync_directory(self.directory)
        except OSError as exc:
            self.failures += 1
            log.error("cannot write state file %s: %s; will retry", self.path, exc.strerror or exc)
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            return False
        self.saves += 1
        return True

    def _set_aside(self) -> Path:
        kept = self.path.with_name(f"{STATE_FILE}.corrupt-{int(self._clock())}")
        try:
            os.replace(self.path, kept)
        except OSError:
            return self.path
        return kept


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
