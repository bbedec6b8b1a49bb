"""The follower, stepped by hand over real files and real rotation tools (no sleeps, no threads).

Each test writes numbered lines, rotates with the real mechanism, and checks that
every line was read exactly once: `Reader` reassembles what the follower yields per
followed file with the real line framer, as `monitor run` does.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from monitor.follow import REAL as REAL_FS
from monitor.follow import Data, End, FileSystem, Follower, FollowSettings, Identity, Position, StreamSpec
from monitor.follow.identity import digest
from monitor.scan.lines import LineFramer
from tests.conftest import REPO, run_unprivileged

LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"
needs_logrotate = pytest.mark.skipif(not os.path.exists(LOGROTATE), reason="logrotate not installed")


class Reader:
    """Applies follower items like the sidecar: one framer per followed file."""

    def __init__(self, follower: Follower) -> None:
        self.follower = follower
        self.framers: dict[int, LineFramer] = {}
        self.lines: list[bytes] = []
        self.ends: list[str] = []

    def step(self, resolve: bool = True, on_data=lambda _item: None) -> Reader:
        for item in self.follower.poll(resolve=resolve):
            framer = self.framers.setdefault(item.file, LineFramer())
            if isinstance(item, Data):
                on_data(item)
                blocks = framer.feed(item.data)
            else:
                blocks = framer.flush()
                if isinstance(item, End):
                    self.ends.append(item.reason)
                    del self.framers[item.file]
            for block in blocks:
                self.lines.extend(block.tobytes().splitlines())
        self.follower.refresh_gauges()  # as a scrape does
        return self

    def drain(self, passes: int = 3) -> Reader:
        for _ in range(passes):
            self.step()
        return self

    def numbers(self) -> list[int]:
        return sorted(int(line.rsplit(b" ", 1)[1]) for line in self.lines if line.startswith(b"line "))


def write(path: Path, first: int, count: int) -> int:
    with open(path, "ab") as f:
        for n in range(first, first + count):
            f.write(b"line %d\n" % n)
    return first + count


def follower_for(*paths: Path, **settings) -> Follower:
    return Follower([StreamSpec("app", tuple(str(p) for p in paths))], FollowSettings(**settings))


def test_first_start_begins_at_the_end_then_reads_new_lines(tmp_path):
    log = tmp_path / "app.log"
    write(log, 0, 5)
    reader = Reader(follower_for(log)).step()
    assert reader.lines == []
    write(log, 5, 3)
    assert reader.step().numbers() == [5, 6, 7]


def test_start_at_beginning(tmp_path):
    log = tmp_path / "app.log"
    write(log, 0, 5)
    assert Reader(follower_for(log, start_at="beginning")).step().numbers() == [0, 1, 2, 3, 4]


def test_missing_directory_and_file_are_waited_for(tmp_path):
    log = tmp_path / "not-yet" / "app.log"
    reader = Reader(follower_for(log)).step()
    assert reader.follower.resolved and reader.follower.stats["app"].files_open == 0
    log.parent.mkdir()
    write(log, 0, 4)  # appeared after start: read from its beginning
    assert reader.step().numbers() == [0, 1, 2, 3]


def test_rename_rotation_reads_the_old_file_to_its_end(tmp_path):
    log = tmp_path / "app.log"
    log.touch()
    reader = Reader(follower_for(log)).step()
    n = write(log, 0, 10)
    reader.step()
    n = write(log, n, 5)  # written before the rename, not read yet
    os.rename(log, tmp_path / "app.log.1")
    n = write(tmp_path / "app.log.1", n, 5)  # the server keeps writing into the renamed file
    n = write(log, n, 5)
    assert reader.drain().numbers() == list(range(n))
    assert reader.follower.stats["app"].rotations == 1


def test_glob_that_also_matches_the_rotated_file_reads_nothing_twice(tmp_path):
    log = tmp_path / "app.log"
    log.touch()
    reader = Reader(follower_for(tmp_path / "app.log*")).step()
    n = write(log, 0, 10)
    reader.step()
    os.rename(log, tmp_path / "app.log.1")
    n = write(log, n, 10)
    assert reader.drain().numbers() == list(range(n))
    assert reader.follower.stats["app"].files_open == 2


def test_delete_and_recreate(tmp_path):
    log = tmp_path / "app.log"
    log.touch()
    reader = Reader(follower_for(log)).step()
    n = write(log, 0, 10)
    log.unlink()  # unread lines of the deleted file are still readable through our handle
    n = write(log, n, 10)
    reader.drain()
    assert reader.numbers() == list(range(n))
    assert "deleted" in reader.ends


def test_truncation_in_place_starts_over(tmp_path):
    log = tmp_path / "app.log"
    log.touch()
    reader = Reader(follower_for(log)).step()
    n = write(log, 0, 10)
    reader.step()
    os.truncate(log, 0)
    n = write(log, n, 3)
    assert reader.drain().numbers() == list(range(n))
    assert reader.follower.stats["app"].truncations == 1


def test_truncated_and_rewritten_past_the_old_offset_is_detected_by_fingerprint(tmp_path):
    log = tmp_path / "app.log"
    log.touch()
    reader = Reader(follower_for(log)).step()
    n = write(log, 0, 10)
    reader.step()
    os.truncate(log, 0)
    n = write(log, n, 30)  # longer than before by the time we look again
    assert reader.drain().numbers() == list(range(n))
    assert reader.follower.stats["app"].truncations == 1


def test_partial_last_line_waits_then_is_flushed_when_idle(tmp_path):
    log = tmp_path / "app.log"
    log.touch()
    now = [0.0]
    follower = Follower(
        [StreamSpec("app", (str(log),))], FollowSettings(partial_line_flush_seconds=5), clock=lambda: now[0]
    )
    reader = Reader(follower).step()
    with open(log, "ab") as f:
        f.write(b"line 0\nline 1")
    assert reader.step().numbers() == [0]
    now[0] = 4.9
    assert reader.step().numbers() == [0]
    now[0] = 5.0
    assert reader.step().numbers() == [0, 1]
    with open(log, "ab") as f:
        f.write(b"\nline 2\n")
    assert reader.step().numbers() == [0, 1, 2]


def test_rotated_file_is_closed_after_idle_time(tmp_path):
    log = tmp_path / "app.log"
    log.touch()
    now = [0.0]
    follower = Follower(
        [StreamSpec("app", (str(log),))], FollowSettings(rotated_close_idle_seconds=60), clock=lambda: now[0]
    )
    reader = Reader(follower).step()
    write(log, 0, 2)
    os.rename(log, tmp_path / "app.log.1")
    reader.step()
    assert follower.stats["app"].files_open == 1
    now[0] = 61
    reader.step()
    assert follower.stats["app"].files_open == 0
    assert reader.ends == ["rotated"]


def test_compressed_and_non_regular_files_are_skipped(tmp_path, caplog):
    (tmp_path / "app.log.2.gz").write_bytes(b"\x1f\x8b not followed")
    (tmp_path / "app.log.d").mkdir()
    os.mkfifo(tmp_path / "app.log.fifo")
    write(tmp_path / "app.log", 0, 1)
    with caplog.at_level(logging.WARNING):
        reader = Reader(follower_for(tmp_path / "app.log*", start_at="beginning")).step().step()
    assert reader.numbers() == [0]
    assert reader.follower.stats["app"].files_open == 1
    assert sum("FIFO" in r.message for r in caplog.records) == 1  # said once, not every pass


def read_ten_lines_and_stop(log: Path) -> tuple[Reader, list[Position], int]:
    """A first run: follow `log` from its end, read 10 lines written to it, save, stop."""
    log.touch()
    reader = Reader(follower_for(log)).step()
    n = write(log, 0, 10)
    reader.step()
    positions = [p for _, p in reader.follower.positions()]
    reader.follower.close()
    return reader, positions, n


def test_restart_resumes_at_the_checkpointed_offset_even_after_a_rename(tmp_path):
    log = tmp_path / "app.log"
    reader, positions, n = read_ten_lines_and_stop(log)
    # While the sidecar is down: more lines, a rotation, more lines in both files.
    n = write(log, n, 5)
    os.rename(log, tmp_path / "app.log.1")
    n = write(tmp_path / "app.log.1", n, 2)
    n = write(log, n, 5)
    restarted = Reader(follower_for(log))
    restarted.follower.restore(positions)
    restarted.drain()
    assert reader.numbers() + restarted.numbers() == list(range(n))


@pytest.mark.parametrize("clock_offset", [0.0, 3600.0, -3600.0])
def test_files_created_and_rotated_while_down_are_read_whatever_the_clock(tmp_path, clock_offset):
    """Catch-up knows files, it does not compare times: a save with the clock an hour ahead (or
    behind) neither skips a file created and rotated while down nor reads an old one again."""
    old = tmp_path / "app.log.2"
    old.write_bytes(b"".join(b"old %d\n" % i for i in range(50)))  # rotated before the first start
    log = tmp_path / "app.log"
    log.touch()
    reader = Reader(follower_for(log)).step()
    n = write(log, 0, 10)
    reader.step()
    positions, (_, known) = [p for _, p in reader.follower.positions()], reader.follower.known_files()
    reader.follower.close()
    # While down: two rotations (RotatingFileHandler's renames), lines in every file.
    for _ in range(2):
        for i in range(8, 0, -1):
            if (tmp_path / f"app.log.{i}").exists():
                (tmp_path / f"app.log.{i}").rename(tmp_path / f"app.log.{i + 1}")
        log.rename(tmp_path / "app.log.1")
        n = write(log, n, 7)
    restarted = Reader(follower_for(log))
    restarted.follower.restore(positions, saved_at=time.time() + clock_offset, known=known)
    restarted.drain()
    assert reader.numbers() + restarted.numbers() == list(range(n))
    assert not any(line.startswith(b"old") for line in restarted.lines)
    restarted.follower.close()


def test_a_checkpoint_without_known_files_falls_back_to_the_time_of_the_save(tmp_path):
    """A checkpoint of the previous version (no list of known files): old rotated files are not
    read again; files written after the save are (the clock decides, once, as it did)."""
    old = tmp_path / "app.log.1"
    old.write_bytes(b"".join(b"old %d\n" % i for i in range(50)))
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    log = tmp_path / "app.log"
    reader, positions, n = read_ten_lines_and_stop(log)
    log.rename(tmp_path / "app.log.0")  # rotated while down, with a name sorting before app.log.1
    n = write(log, n, 5)
    restarted = Reader(follower_for(log))
    restarted.follower.restore(positions, saved_at=time.time() - 60, known=None)
    restarted.drain()
    assert reader.numbers() + restarted.numbers() == list(range(n))
    assert not any(line.startswith(b"old") for line in restarted.lines)
    assert [p.path for p in restarted.follower.known_files()[1]] == [str(old)]  # known from now on
    restarted.follower.close()


def test_restart_after_the_file_was_compressed_counts_it_lost_only_if_unread(tmp_path):
    log = tmp_path / "app.log"
    log.touch()
    reader = Reader(follower_for(log)).step()
    write(log, 0, 100)
    reader.step()
    (position,) = [p for _, p in reader.follower.positions()]
    assert position.offset == position.size
    reader.follower.close()
    subprocess.run(["gzip", str(log)], check=True)
    read_to_end = Follower([StreamSpec("app", (str(log),))])
    read_to_end.restore([position])
    assert read_to_end.stats["app"].lost_files == 0
    with_unread_bytes = Follower([StreamSpec("app", (str(log),))])
    with_unread_bytes.restore([replace(position, size=position.size + 80)])
    assert with_unread_bytes.stats["app"].lost_files == 1


def test_many_writer_threads_through_rotating_file_handler(tmp_path):
    log = tmp_path / "tradingagents.log"
    log.touch()
    reader = Reader(follower_for(log))
    reader.step()
    rollovers = []

    class CountingHandler(logging.handlers.RotatingFileHandler):
        def doRollover(self) -> None:  # noqa: N802 (logging's name)
            rollovers.append(1)
            super().doRollover()

    handler = CountingHandler(log, maxBytes=8_000, backupCount=5, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"rfh-{id(tmp_path)}")
    logger.propagate = False
    logger.addHandler(handler)
    counter = iter(range(10**9))
    lock = threading.Lock()
    stop = threading.Event()

    def worker() -> None:
        for _ in range(1500):
            with lock:
                n = next(counter)
            logger.warning("line %d", n)

    def follow() -> None:
        while not stop.is_set():
            reader.step()

    follower_thread = threading.Thread(target=follow)
    follower_thread.start()
    workers = [threading.Thread(target=worker) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    handler.close()
    stop.set()
    follower_thread.join()
    reader.drain()
    assert reader.numbers() == list(range(6000))
    assert len(rollovers) >= 5  # the test is about rotation: make sure it happened
    assert reader.follower.stats["app"].rotations == len(rollovers)


def logrotate(tmp_path: Path, log: Path, *directives: str) -> None:
    conf = tmp_path / "logrotate.conf"
    body = "\n  ".join(["rotate 5", "missingok", *directives])
    conf.write_text(f"{log} {{\n  {body}\n}}\n")
    subprocess.run([LOGROTATE, "-f", "-s", str(tmp_path / "logrotate.state"), str(conf)], check=True)


@needs_logrotate
def test_logrotate_create_while_the_server_keeps_writing_the_renamed_file(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.touch()
    reader = Reader(follower_for(log)).step()
    server = open(log, "ab", buffering=0)  # noqa: SIM115 (the server's handle: it ignores the reopen signal)
    n = 0
    for _ in range(3):
        for _ in range(100):
            server.write(b"line %d\n" % n)
            n += 1
        reader.step()
        logrotate(tmp_path, log, "create 0644", "delaycompress", "compress")
        for _ in range(50):  # still into the renamed file
            server.write(b"line %d\n" % n)
            n += 1
        reader.step()
    server.close()
    assert reader.drain().numbers() == list(range(n))
    assert reader.follower.stats["app"].rotations == 3


@needs_logrotate
def test_logrotate_copytruncate_reads_unread_lines_from_the_copy(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.touch()
    reader = Reader(follower_for(log)).step()
    n = write(log, 0, 100)
    reader.step()
    n = write(log, n, 40)  # not read before the copy: must come from app.log.1
    logrotate(tmp_path, log, "copytruncate")  # the writer pauses during the copy-truncate window
    n = write(log, n, 60)
    assert reader.drain().numbers() == list(range(n))
    assert reader.follower.stats["app"].truncations == 1


@needs_logrotate
def test_logrotate_copytruncate_with_a_glob_matching_the_copy(tmp_path):
    log = tmp_path / "app.log"
    log.touch()
    reader = Reader(follower_for(tmp_path / "app.log*")).step()
    n = write(log, 0, 100)
    reader.step()
    n = write(log, n, 40)
    shutil.copyfile(log, tmp_path / "app.log.1")  # the copy appears first ...
    reader.step()
    os.truncate(log, 0)  # ... then the truncation, as copytruncate does
    n = write(log, n, 60)
    assert reader.drain().numbers() == list(range(n))


def copytruncate_by_hand(log: Path, between=lambda: None) -> None:
    """logrotate's copytruncate, step by step: app.log.1 -> app.log.2, copy app.log to app.log.1 in
    two chunks (`between` runs between them), truncate app.log."""
    older = log.with_name(log.name + ".1")
    if older.exists():
        older.rename(log.with_name(log.name + ".2"))
    copy_in_chunks(log, older, 2, between)
    os.truncate(log, 0)


def test_a_file_copytruncated_before_any_of_it_was_read_is_read_from_the_copy(tmp_path):
    """A lazy loop's blind spot, found with real logrotate: the new app.log a `create` rotation
    made is followed while still empty, then written, copied and truncated between two looks.
    Nothing was read of it, so nothing in it tells of the truncation: the copy, a file that
    appeared beside the path, holds its lines and is read whole."""
    log = tmp_path / "app.log"
    log.touch()
    reader = Reader(follower_for(log)).step()
    n = write(log, 0, 10)
    reader.step()
    log.rename(tmp_path / "app.log.1")
    log.touch()
    reader.step()  # the new app.log is followed, empty
    n = write(log, n, 20)
    copytruncate_by_hand(log)
    n = write(log, n, 5)  # written after the truncation
    assert reader.drain().numbers() == list(range(n))


def test_a_pass_during_the_copy_of_an_unread_file_reads_each_line_once(tmp_path):
    """The same, with a pass between two chunks of the copy, while app.log still holds every line
    and app.log.1 a part of them: the part is a copy of lines app.log will yield, not new lines."""
    log = tmp_path / "app.log"
    log.touch()
    reader = Reader(follower_for(log)).step()
    log.rename(tmp_path / "app.log.1")
    log.touch()
    reader.step()
    n = write(log, 0, 40)
    copytruncate_by_hand(log, between=reader.step)
    n = write(log, n, 5)
    assert reader.drain().numbers() == list(range(n))


def test_a_truncation_right_after_our_read_still_leaves_the_file_known_in_its_copy(tmp_path):
    """Found with real logrotate and a lazy loop: copytruncate truncated a young file (followed
    while empty) just after a pass read it and before the pass took its fingerprint from the
    file again, so it kept none and its copy was read whole as new: every line twice. The
    fingerprint is now taken from the bytes read."""
    log = tmp_path / "app.log"
    log.touch()
    reader = Reader(follower_for(log)).step()
    log.rename(tmp_path / "app.log.1")
    log.touch()
    reader.step()  # the new app.log is followed, empty
    n = write(log, 0, 40)
    (tmp_path / "app.log.1").rename(tmp_path / "app.log.2")
    shutil.copyfile(log, tmp_path / "app.log.1")  # copytruncate's copy ...
    truncated = []

    def truncate_once(_item) -> None:  # ... and its truncation, while the pass reads the original
        if not truncated:
            os.truncate(log, 0)
            truncated.append(True)

    reader.step(on_data=truncate_once)
    assert truncated
    n = write(log, n, 5)
    assert reader.drain().numbers() == list(range(n))
    assert reader.follower.stats["app"].truncations == 1


def test_a_copy_of_an_unread_file_that_is_not_truncated_is_not_read_twice(tmp_path):
    """logrotate's `copy` (no truncation), or `cp app.log backup`, of a file nothing was read of yet:
    the lines are read once, from the file itself."""
    log = tmp_path / "app.log"
    log.touch()
    reader = Reader(follower_for(log)).step()
    n = write(log, 0, 30)
    shutil.copyfile(log, tmp_path / "app.log.1")
    n = write(log, n, 5)
    assert reader.drain().numbers() == list(range(n))


def test_a_copy_still_being_written_is_not_taken_for_a_new_file(tmp_path):
    """copytruncate with a glob that names the copy: logrotate fills app.log.1 in chunks, then
    truncates app.log. A pass between two chunks sees a copy shorter than what was read of the
    original: undecided, it is looked at again, never followed from byte 0."""
    log = tmp_path / "app.log"
    log.touch()
    reader = Reader(follower_for(tmp_path / "app.log*")).step()
    n = write(log, 0, 1000)
    reader.step()
    whole = log.read_bytes()
    copy = tmp_path / "app.log.1"
    copy.write_bytes(whole[:8192])  # the copy, part of the way
    reader.step()
    with open(copy, "ab") as f:
        f.write(whole[8192:])  # the rest of the copy ...
    os.truncate(log, 0)  # ... then the truncation
    reader.drain(3)
    assert reader.numbers() == list(range(n))
    assert reader.follower.stats["app"].truncations == 1
    n = write(log, n, 10)  # the server writes on into the truncated file
    assert reader.drain(2).numbers() == list(range(n))


def test_a_partial_copy_that_stays_partial_holds_nothing_new(tmp_path):
    """A file holding only a prefix of what was read (a copy that stopped, `head -c`) is never
    read: every line in it was read from the original, before and after the original is truncated."""
    log = tmp_path / "app.log"
    log.touch()
    reader = Reader(follower_for(tmp_path / "app.log*")).step()
    n = write(log, 0, 1000)
    reader.step()
    (tmp_path / "app.log.1").write_bytes(log.read_bytes()[:8192])
    reader.drain(2)
    assert reader.follower.stats["app"].behind_bytes == 0  # nothing of a maybe-copy is due: no alarm
    os.truncate(log, 0)
    n = write(log, n, 10)
    assert reader.drain(3).numbers() == list(range(n))


def test_the_next_file_under_a_renamed_files_name_is_read_even_if_it_starts_the_same(tmp_path):
    """Identical lines (a fixed timestamp) in the new app.log after a rename rotation: the new file
    is a prefix of the renamed one, byte for byte, yet it is the name's next file, not a copy."""
    log = tmp_path / "app.log"
    log.write_bytes(b"the same line\n" * 12)
    reader = Reader(follower_for(log, start_at="beginning")).step()
    log.rename(tmp_path / "app.log.1")
    log.write_bytes(b"the same line\n" * 3)
    reader.drain(3)
    assert len(reader.lines) == 15
    reader.follower.close()


def test_start_up_compares_a_new_file_with_the_files_that_start_alike_only(tmp_path, monkeypatch):
    """Whether a file is a copy is asked of the files that share its first 64 bytes, found by an
    index: following 3,000 files costs 3,000 small look-ups, not 3,000 x 3,000 comparisons."""
    from monitor.follow import copies, table

    for n in range(3000):
        first = f"2025-10-22 14:{n // 600 % 60:02d}:{n // 10 % 60:02d},{n % 1000:03d} | server | INFO | file {n}\n"
        (tmp_path / f"app-{n:05d}.log").write_text(first * 20)
    compared = []

    def counting_verdict(handle, st, head, sources, path):
        sources = list(sources)
        compared.append(len(sources))
        return copies.verdict(handle, st, head, sources, path)

    monkeypatch.setattr(table, "verdict", counting_verdict)  # the real verdict, counted
    follower = follower_for(tmp_path / "app-*.log", max_files_per_stream=3000, start_at="beginning")
    reader = Reader(follower).step()
    assert len(reader.lines) == 3000 * 20
    assert (len(compared), sum(compared)) == (3000, 0)  # no two files start alike here
    follower.close()


# --- hostile filesystems ----------------------------------------------------------------------


def test_a_glob_matching_100k_files_is_capped_and_memory_stays_bounded(tmp_path, caplog):
    import resource

    for n in range(100_000):
        os.close(os.open(tmp_path / f"app-{n:06d}.log", os.O_CREAT | os.O_WRONLY, 0o644))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    follower = follower_for(tmp_path / "app-*.log", max_files_per_stream=200)
    with caplog.at_level(logging.WARNING):
        Reader(follower).step().step()
    stats = follower.stats["app"]
    assert (stats.files_open, stats.skipped_files) == (200, 99_800)
    assert sum("100000 files match, following the first 200" in r.message for r in caplog.records) == 1
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB
    follower.close()


def test_path_becomes_a_directory_a_symlink_loop_or_a_fifo(tmp_path, caplog):
    log = tmp_path / "app.log"
    loop = tmp_path / "loop.log"
    os.symlink(loop, loop)
    fifo = tmp_path / "pipe.log"
    os.mkfifo(fifo)
    log.touch()
    follower = follower_for(log, loop, fifo)
    reader = Reader(follower).step()
    n = write(log, 0, 3)
    log.unlink()
    log.mkdir()  # the log path is now a directory
    with caplog.at_level(logging.WARNING):
        reader.drain(5)
    assert reader.numbers() == list(range(n))  # what the file held before is still read
    assert follower.stats["app"].read_errors == 3  # loop, FIFO, directory: each counted once
    messages = " ".join(r.message for r in caplog.records)
    assert "Too many levels of symbolic links" in messages
    assert f"{log} is a directory; skipping it" in messages
    assert "pipe.log is not a regular file (FIFO" in messages


def test_a_saved_path_that_became_a_fifo_does_not_hang_the_restart(tmp_path):
    """Restore opens the saved names without a stat first: a FIFO there is refused, not waited on."""
    log = tmp_path / "app.log"
    write(log, 0, 10)
    script = textwrap.dedent(
        f"""
        import os
        from monitor.follow import Follower, FollowSettings, StreamSpec
        spec = [StreamSpec("app", ({str(log)!r},))]
        first = Follower(spec, FollowSettings(start_at="beginning"))
        read = sum(len(i.data) for i in first.poll() if hasattr(i, "data"))
        saved = [p for _, p in first.positions()]
        first.close()
        os.unlink({str(log)!r})
        os.mkfifo({str(log)!r})
        second = Follower(spec)
        second.restore(saved)
        list(second.poll())
        print(read, second.stats["app"].read_errors)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["70", "1"]  # read before; the FIFO counted once as a problem


def test_a_file_swapped_for_a_fifo_between_stat_and_open_is_refused_without_blocking(tmp_path, caplog):
    log = tmp_path / "app.log"
    log.touch()

    def swapping_open(path: str):
        if path == str(log) and log.is_file():
            log.unlink()
            os.mkfifo(log)  # after discovery's stat said "regular file"
        return REAL_FS.open(path)

    follower = Follower([StreamSpec("app", (str(log),))], FollowSettings(), fs=replace(REAL_FS, open=swapping_open))
    with caplog.at_level(logging.WARNING):
        done = threading.Event()
        worker = threading.Thread(target=lambda: (Reader(follower).step(), done.set()), daemon=True)
        worker.start()
        worker.join(timeout=30)
        if not done.is_set():  # unblock the open so the thread can end, then fail
            os.close(os.open(log, os.O_WRONLY | os.O_NONBLOCK))
            worker.join(timeout=5)
    assert done.is_set(), "opening a FIFO blocked the follower"
    assert follower.stats["app"].read_errors == 1
    assert "not a regular file" in " ".join(r.message for r in caplog.records)
    follower.close()


def test_a_hard_link_of_a_followed_file_is_no_rotation_and_changes_nothing_while_idle(tmp_path):
    log = tmp_path / "app.log"
    log.touch()
    follower = follower_for(tmp_path / "*.log")
    reader = Reader(follower).step()
    n = write(log, 0, 5)
    os.link(log, tmp_path / "backup.log")  # the same file under a second name the glob matches
    reader.drain(3)
    generation = follower.generation
    reader.drain(5)
    assert follower.generation == generation  # nothing moves: no checkpoint is due while idle
    assert follower.stats["app"].rotations == 0
    assert [p.path for _, p in follower.positions()] == [str(log)]
    assert reader.numbers() == list(range(n))
    follower.close()


def test_permission_denied_is_counted_and_said_once(tmp_path):
    tmp_path.chmod(0o755)
    secret = tmp_path / "app.log"
    secret.write_text("line 0\n")
    secret.chmod(0o000)
    script = (
        "import json, logging, sys\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "from monitor.follow import Follower, FollowSettings, StreamSpec\n"
        f"f = Follower([StreamSpec('app', ({str(secret)!r},))], FollowSettings(start_at='beginning'))\n"
        "for _ in range(3):\n    list(f.poll())\n"
        "f.refresh_gauges()\n"
        "print(json.dumps({'read_errors': f.stats['app'].read_errors, 'open': f.stats['app'].files_open}))\n"
    )
    result = run_unprivileged(script)
    assert json.loads(result.stdout) == {"read_errors": 1, "open": 0}
    assert result.stderr.count("Permission denied") == 1  # said once, though polled three times


def test_a_log_that_cannot_be_opened_at_restart_keeps_its_saved_position(shared_directory):
    """chmod 000 while the sidecar is down: its saved position is kept (and saved) until the file
    can be read again, then reading goes on from it. As an unprivileged user: real EACCES."""
    log = shared_directory / "app.log"
    write(log, 0, 10)
    os.chown(log, 65534, 65534)  # the user below owns it: it may chmod it, not read it at 000
    script = textwrap.dedent(
        f"""
        import json, os
        from monitor.follow import Data, Follower, FollowSettings, StreamSpec
        spec = [StreamSpec("app", ({str(log)!r},))]
        first = Follower(spec, FollowSettings(start_at="beginning"))
        list(first.poll())
        saved = [p for _, p in first.positions()]
        first.close()
        with open({str(log)!r}, "a") as f:
            f.writelines(f"line {{n}}\\n" for n in range(10, 25))
        os.chmod({str(log)!r}, 0)
        second = Follower(spec)
        second.restore(saved)
        data = b"".join(i.data for i in second.poll() if isinstance(i, Data))
        kept = [(p.path, p.offset) for _, p in second.positions()]
        os.chmod({str(log)!r}, 0o644)
        data += b"".join(i.data for _ in range(2) for i in second.poll() if isinstance(i, Data))
        print(json.dumps({{"kept": kept, "read": data.decode(), "lost": second.stats["app"].lost_files}}))
        """
    )
    result = run_unprivileged(script)
    found = json.loads(result.stdout)
    assert found["kept"] == [[str(log), 70]]  # saved while it could not be read
    assert found["read"] == "".join(f"line {n}\n" for n in range(10, 25))  # on from there, once
    assert found["lost"] == 0


# --- properties: random writes, rotations of every kind and looks, checked against a model ------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(min_value=1, max_value=30)),
        st.tuples(st.sampled_from(["poll", "rename", "copytruncate", "delete", "partial"]), st.just(0)),
    ),
    max_size=30,
)


GLOB_OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(min_value=1, max_value=30)),
        st.tuples(st.just("copytruncate"), st.integers(min_value=1, max_value=4)),  # copied in N chunks
        st.tuples(st.sampled_from(["poll", "rename", "delete", "partial"]), st.just(0)),
    ),
    max_size=30,
)
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(operations=OPERATIONS)
def test_every_line_is_read_exactly_once_whatever_the_rotations(operations):
    """The model: every numbered line written is read once. Two things no follower can do are
    left out: a file deleted before anyone looked at it (the follower holds looked-at files
    open), and lines of a file copytruncated when 1 to 63 bytes of it were read (too little to
    recognise its copy by; with nothing read, the copy is new to us and read whole); the writer
    waits while the copy is made, as logrotate requires."""
    run_rotation_model(operations, glob=False)


@PROPERTY_SETTINGS
@given(operations=GLOB_OPERATIONS)
def test_a_glob_naming_the_copies_reads_every_line_once_while_copies_are_written(operations):
    """The model above, following `app.log*`, which names the rotated files and the copies too.
    copytruncate writes its copy (`app.log.1`) in chunks and a pass may look between two chunks,
    as with logrotate: a copy still being written must not be taken for a new file. Under 64 bytes
    a file (or a copy's first chunk) cannot be told from a new file that starts alike, so the model
    copies no shorter file and writes no shorter chunk."""
    run_rotation_model(operations, glob=True)


def test_a_file_truncated_twice_keeps_both_contents_known():
    """Found by the model above: the old copies of one inode's two contents (copytruncate twice,
    then a delete starts a catch-up) are both known, and neither is read again."""
    ops = [("write", 1), ("copytruncate", 0), ("write", 1), ("copytruncate", 0), ("delete", 0)]
    run_rotation_model(ops, glob=False)


def run_rotation_model(operations: list[tuple[str, int]], glob: bool) -> None:

    with tempfile.TemporaryDirectory() as directory:
        directory = Path(directory)
        log = directory / "app.log"
        log.touch()
        reader = Reader(follower_for(directory / "app.log*" if glob else log)).step()
        n = 0
        read_of_current = 0  # bytes of the current app.log present at the last look

        def look() -> None:
            nonlocal read_of_current
            reader.step()
            read_of_current = log.stat().st_size

        def shift() -> None:  # logrotate's renames: app.log.N -> app.log.N+1
            for i in range(30, 0, -1):
                older = directory / f"app.log.{i}"
                if older.exists():
                    older.rename(directory / f"app.log.{i + 1}")

        for operation, count in operations:
            if operation == "write":
                n = write(log, n, count)
            elif operation == "partial":  # a line written in two parts
                with open(log, "ab") as f:
                    f.write(b"line %d" % n)
                with open(log, "ab") as f:
                    f.write(b"\n")
                n += 1
            elif operation == "poll":
                look()
            elif operation == "rename":
                shift()
                log.rename(directory / "app.log.1")
                log.touch()
                read_of_current = 0
            elif operation == "copytruncate":
                while glob and log.stat().st_size < 64:  # a shorter copy cannot be told from a new file
                    n = write(log, n, 1)
                if 0 < read_of_current < 64:  # nothing read at all is fine: the copy is then read whole
                    look()
                shift()
                copy_in_chunks(log, directory / "app.log.1", max(count, 1), between=reader.step)
                os.truncate(log, 0)
                read_of_current = 0
            elif operation == "delete":
                look()
                log.unlink()
                log.touch()
                read_of_current = 0
        reader.drain(4)
        assert reader.numbers() == list(range(n))
        reader.follower.close()


def copy_in_chunks(source: Path, copy: Path, chunks: int, between) -> None:
    """Copy as a copying tool writes (logrotate: 4 KiB and up, none under 64 bytes), calling
    `between` (a pass of the follower) between two chunks."""
    whole = source.read_bytes()
    cuts = [max(len(whole) * k // chunks, 64) for k in range(1, chunks + 1)]
    with open(copy, "wb") as f:
        done = 0
        for cut in cuts:
            f.write(whole[done:cut])
            f.flush()
            done = cut
            if cut < len(whole):
                between()


def test_a_rotated_file_written_again_after_a_quiet_hour_is_still_read(tmp_path):
    """logrotate `create` with a server that ignores the reopen signal: the renamed file is the
    one still written, possibly after a quiet night. It stays followed until deleted."""
    log = tmp_path / "app.log"
    log.touch()
    now = [0.0]
    follower = Follower([StreamSpec("app", (str(log),))], FollowSettings(), clock=lambda: now[0])
    reader = Reader(follower).step()
    server = open(log, "ab", buffering=0)  # noqa: SIM115 (the server's handle)
    server.write(b"line 0\n")
    log.rename(tmp_path / "app.log.1")
    log.touch()
    reader.step()
    now[0] += 3600
    reader.step()
    server.write(b"line 1\n")
    reader.step()
    assert reader.numbers() == [0, 1]
    server.close()
    (tmp_path / "app.log.1").unlink()
    reader.step()
    assert reader.ends == ["deleted"]


# --- properties: kill -9 at any step, and names that change between a stat and an open ----------


class RacingFileSystem:
    """Real calls, except that an armed `open` of the log first rotates it (RotatingFileHandler's
    rename), as logrotate can between the follower's stat of a name and its open of it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.armed = False
        self.fs = FileSystem(open=self.open)

    def open(self, path: str):
        if self.armed and path == str(self.directory / "app.log"):
            self.armed = False
            rename_rotate(self.directory)
        return open(path, "rb", buffering=0)


def rename_rotate(directory: Path) -> None:
    for i in range(8, 0, -1):
        older = directory / f"app.log.{i}"
        if older.exists():
            older.rename(directory / f"app.log.{i + 1}")
    (directory / "app.log").rename(directory / "app.log.1")
    (directory / "app.log").touch()


class Sidecar:
    """What `monitor run` keeps across a kill -9: positions and the lines counted, saved together
    whenever a file is opened or closed (as the follow loop does) and when asked."""

    def __init__(self, directory: Path, fs: RacingFileSystem) -> None:
        self.directory, self.fs = directory, fs
        self.reader = Reader(self.new_follower())
        self.saved: tuple[list[Position], list[bytes], list[Position]] = ([], [], [])
        self.generation = -1
        self.step()  # the first pass saves: its files were opened

    def new_follower(self) -> Follower:
        return Follower([StreamSpec("app", (str(self.directory / "app.log"),))], FollowSettings(), fs=self.fs.fs)

    def step(self) -> None:
        self.reader.step()
        self.check_one_entry_per_identity()
        if self.reader.follower.generation != self.generation:
            self.save()

    def save(self) -> None:
        framers = self.reader.framers
        positions = [
            replace(p, offset=p.offset - (framers[s].pending_bytes if s in framers else 0))
            for s, p in self.reader.follower.positions()
        ]
        self.saved = (positions, list(self.reader.lines), self.reader.follower.known_files()[1])
        self.generation = self.reader.follower.generation

    def kill9_and_restart(self) -> None:
        self.reader.follower.close()  # the process is gone: its descriptors with it
        positions, lines, known = self.saved
        follower = self.new_follower()
        follower.restore(positions, known=known)  # no clock: what is known is what was saved
        self.reader = Reader(follower)
        self.reader.lines = list(lines)
        self.generation = -1
        self.step()

    def check_one_entry_per_identity(self) -> None:
        identities = [(p.identity.dev, p.identity.ino) for _, p in self.reader.follower.positions()]
        assert len(identities) == len(set(identities)), f"a file followed twice: {identities}"


KILL_OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(min_value=1, max_value=30)),
        st.tuples(
            st.sampled_from(["poll", "rename", "copytruncate", "delete", "race", "save", "kill"]),
            st.just(0),
        ),
    ),
    max_size=30,
)


@settings(
    max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(operations=KILL_OPERATIONS)
def test_kill_9_at_any_step_and_renames_between_stat_and_open_count_every_line_once(operations):
    """After every step no file is followed twice; at the end every line written is counted once.

    Lines are lost only where no follower could keep them, and the model avoids that: a file is
    deleted or copytruncated only after a look that saved its position (the follow loop saves
    whenever a file closes), since lines read but not saved, in a file deleted while the sidecar
    is down, are gone with it."""

    with tempfile.TemporaryDirectory() as directory:
        directory = Path(directory)
        log = directory / "app.log"
        log.touch()
        fs = RacingFileSystem(directory)
        sidecar = Sidecar(directory, fs)
        n = 0
        for operation, count in operations:
            if operation == "write":
                n = write(log, n, count)
            elif operation == "poll":
                sidecar.step()
            elif operation == "rename":
                rename_rotate(directory)
            elif operation == "race":
                fs.armed = True  # the next open of app.log finds it rotated under it
                sidecar.step()
            elif operation == "save":
                sidecar.save()
            elif operation == "kill":
                sidecar.kill9_and_restart()
            elif operation in ("copytruncate", "delete"):
                sidecar.step()
                sidecar.save()
                if operation == "delete":
                    log.unlink()
                    log.touch()
                elif log.stat().st_size >= 64:  # less is too little to recognise a copy by
                    shutil.copyfile(log, directory / f"app.log.copy{n}")
                    os.truncate(log, 0)
        for _ in range(4):
            sidecar.step()
        assert sidecar.reader.numbers() == list(range(n))
        sidecar.reader.follower.close()


def test_an_empty_file_saved_by_one_stream_is_not_found_again_in_another_streams_file(tmp_path):
    """Inode numbers are reused: a file that was empty when checkpointed (no fingerprint) must not
    be 'found again' in a file of another stream that got its inode number (seen with logrotate
    rotating app.log and app2.log in one directory: +70 lines on one stream, -70 on the other)."""
    other = tmp_path / "app2.log"
    write(other, 0, 5)
    st = other.stat()
    empty_then = Position("app", str(tmp_path / "app.log.3"), Identity(st.st_dev, st.st_ino, 0, digest(b"")), 0, 0)
    (tmp_path / "app.log").touch()
    streams = [StreamSpec("app", (str(tmp_path / "app.log"),)), StreamSpec("app2", (str(other),))]
    follower = Follower(streams, FollowSettings())
    follower.restore([empty_then])
    reader = Reader(follower).drain(2)
    assert {p.stream: p.path for _, p in follower.positions()} == {"app": str(tmp_path / "app.log"), "app2": str(other)}
    assert reader.numbers() == [0, 1, 2, 3, 4]  # read once, as app2's
    follower.close()


def test_a_file_named_by_another_stream_is_never_taken_for_this_ones_checkpointed_file(tmp_path):
    """Same inode and the same first bytes (logs of one day start alike): still the other stream's."""
    shared_head = b"2025-10-22 14:20:02,123 | backend.tradingagents_server | INFO     | x\n"
    other = tmp_path / "app2.log"
    other.write_bytes(shared_head * 3)
    st = other.stat()
    identity = Identity(st.st_dev, st.st_ino, len(shared_head), digest(shared_head))
    saved = Position("app", str(tmp_path / "app.log.1"), identity, len(shared_head), len(shared_head))
    streams = [StreamSpec("app", (str(tmp_path / "app.log"),)), StreamSpec("app2", (str(other),))]
    follower = Follower(streams, FollowSettings())
    follower.restore([saved])
    list(follower.poll())
    assert [(p.stream, p.path, p.offset) for _, p in follower.positions()] == [
        ("app2", str(other), 3 * len(shared_head))
    ]
    assert follower.stats["app"].lost_files == 0  # it was read to its end when saved
    follower.close()


def test_a_pass_left_early_reads_on_from_the_last_chunk_handed_over(tmp_path):
    """A shutdown in the middle of a long pass stops taking chunks: nothing skipped, nothing twice."""
    log = tmp_path / "app.log"
    write(log, 0, 20_000)
    follower = follower_for(log, start_at="beginning", read_chunk_bytes=4096)
    reader = Reader(follower)
    framer = LineFramer()
    first = next(item for item in follower.poll() if isinstance(item, Data))  # then the caller stops
    reader.framers[first.file] = framer
    reader.lines.extend(line for b in framer.feed(first.data) for line in b.tobytes().splitlines())
    assert [p.offset for _, p in follower.positions()] == [4096]
    reader.drain(2)
    assert reader.numbers() == list(range(20_000))
    follower.close()
