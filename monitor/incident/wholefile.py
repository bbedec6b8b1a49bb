"""One-shot scans of whole files (`monitor scan`), on every core for large plain files.

A large uncompressed file is cut into line-aligned ranges, one per worker: each
cut is moved forward to just after a newline, so every line lies whole in one
range and is framed, matched and counted exactly as a serial scan would. The
workers are forked after the rules are compiled, so they compile nothing, and
send back plain totals, never lines:

- the framer's counts (lines, bytes, oversized lines);
- each rule's count and newest time;
- for rules read as events (labels), each distinct (rule, labels) with its count,
  in the order each first appeared. Replayed range by range in that order, the
  metrics stage admits capped label values exactly as it would have line by line;
- with `minutes` (`scan --report`), each rule's lines per minute of their own time. A range's
  first lines without a timestamp of their own (a traceback cut by the range) are `UNTIMED`.

Compressed files, small files and `--jobs 1` are scanned in this process.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from monitor.export.metrics import LogMetrics
from monitor.logs import escape
from monitor.scan.lines import FramerStats
from monitor.scan.matcher import Event, Matcher, Scanner, Tally
from monitor.scan.readfiles import LogReadError, is_gzip, read_chunks

MIN_PARALLEL_BYTES = 32 << 20  # below this, forking costs more than it saves
Progress = Callable[[int], None]  # bytes of the file consumed so far


@dataclass
class RangeResult:
    """What one worker found in its range; plain values, cheap to send between processes."""

    stats: FramerStats = field(default_factory=FramerStats)
    counts: dict[str, int] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    labelled: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[float]] = field(default_factory=dict)
    minutes: dict[tuple[str, int], int] = field(default_factory=dict)  # only when scanned with minutes
    error: str | None = None

    def add(self, tally: Tally) -> None:
        for rule, lines in tally.counts.items():
            self.counts[rule] = self.counts.get(rule, 0) + lines
        for rule, when in tally.times.items():
            self.times[rule] = max(self.times.get(rule, 0.0), when)
        for event in tally.events:
            entry = self.labelled.setdefault((event.rule, event.severity, event.labels), [0, 0.0])
            entry[0] += 1
            entry[1] = max(entry[1], event.time)
        for key, lines in tally.minutes.items():
            self.minutes[key] = self.minutes.get(key, 0) + lines

    def observe_into(self, metrics: LogMetrics, stream: str) -> None:
        metrics.observe(Tally(counts=self.counts, times=self.times))
        for (rule, severity, labels), (count, when) in self.labelled.items():
            metrics.observe_repeated(Event(rule, severity, "", {}, labels, when), int(count))
        metrics.observe_stream(stream, self.stats)


def default_jobs() -> int:
    """The CPUs this process may run on (a container's cpuset, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def scan_file(
    path: Path,
    matcher: Matcher,
    max_line_bytes: int,
    chunk_bytes: int,
    jobs: int,
    progress: Progress,
    min_parallel_bytes: int = MIN_PARALLEL_BYTES,
    minutes: bool = False,
) -> list[RangeResult]:
    """The file's results, range by range in file order (one range when scanned serially);
    with `minutes`, also each rule's lines per minute."""
    try:
        size = path.stat().st_size
        parallel = jobs > 1 and size >= min_parallel_bytes and not is_gzip(path)
    except OSError:
        parallel = False  # read_chunks names the problem
    if not parallel:
        return [_scan_serial(path, matcher, max_line_bytes, chunk_bytes, progress, minutes)]
    # Ranges of at least half the threshold each: a worker must have enough to do to pay its fork.
    ranges = _line_aligned_ranges(path, size, min(jobs, max(1, size // max(1, min_parallel_bytes // 2))))
    if len(ranges) == 1:  # one line longer than the file's other half, say
        return [_scan_serial(path, matcher, max_line_bytes, chunk_bytes, progress, minutes)]
    global _WORKER_MATCHER
    _WORKER_MATCHER = matcher  # inherited by the forked workers: nothing to pickle or compile
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=len(ranges), mp_context=context) as pool:
            futures = [
                pool.submit(_scan_range, path, start, end, max_line_bytes, chunk_bytes, minutes)
                for start, end in ranges
            ]
            results = [future.result() for future in futures]
    finally:
        _WORKER_MATCHER = None
    progress(size)
    return results


_WORKER_MATCHER: Matcher | None = None


def _scan_serial(
    path: Path, matcher: Matcher, max_line_bytes: int, chunk_bytes: int, progress: Progress, minutes: bool
) -> RangeResult:
    result = RangeResult()
    scanner = Scanner(matcher, max_line_bytes, minutes)
    try:
        for chunk in read_chunks(path, chunk_bytes, progress):
            result.add(scanner.feed(chunk))
    except LogReadError as exc:
        result.error = str(exc)
    result.add(scanner.flush())
    result.stats = scanner.framer.stats
    return result


def _scan_range(
    path: Path, start: int, end: int, max_line_bytes: int, chunk_bytes: int, minutes: bool = False
) -> RangeResult:
    assert _WORKER_MATCHER is not None
    result = RangeResult()
    scanner = Scanner(_WORKER_MATCHER, max_line_bytes, minutes)
    position = start
    try:
        with open(path, "rb", buffering=0) as file:
            while position < end:
                chunk = os.pread(file.fileno(), min(chunk_bytes, end - position), position)
                if not chunk:
                    break  # the file shrank meanwhile: what was there is counted
                position += len(chunk)
                result.add(scanner.feed(chunk))
    except OSError as exc:
        result.error = f"{escape(str(path))}: read failed after {position} bytes: {exc.strerror or exc}"
    result.add(scanner.flush())
    result.stats = scanner.framer.stats
    return result


def _line_aligned_ranges(path: Path, size: int, parts: int) -> list[tuple[int, int]]:
    """`parts` ranges covering [0, size), each cut moved to just after the next newline."""
    cuts = [0]
    with open(path, "rb", buffering=0) as file:
        for index in range(1, parts):
            cut = _next_line_start(file.fileno(), max(cuts[-1], size * index // parts), size)
            if cut >= size:
                break
            if cut > cuts[-1]:
                cuts.append(cut)
    cuts.append(size)
    return list(itertools.pairwise(cuts))


def _next_line_start(fd: int, position: int, size: int, step: int = 1 << 16) -> int:
    while position < size:
        piece = os.pread(fd, step, position)
        if not piece:
            return size
        newline = piece.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        position += len(piece)
    return size
