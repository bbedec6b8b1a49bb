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

Several files are scanned at once: a compressed file cannot be cut (a gzip stream
is read from its start), so each one is scanned whole by one worker, on the same
pool as the ranges of large plain files. Results are taken back in the order of the
files, so the metrics see exactly what a serial scan gives them. Small plain files,
a lone compressed file and `--jobs 1` are scanned in this process.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
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
    scans = scan_paths(
        [path], matcher, max_line_bytes, chunk_bytes, jobs, lambda _: progress, min_parallel_bytes, minutes
    )
    ((_, results),) = scans  # run to its end, so the pool (if any) is shut down
    return results


def scan_paths(
    paths: Sequence[Path],
    matcher: Matcher,
    max_line_bytes: int,
    chunk_bytes: int,
    jobs: int,
    progress_of: Callable[[Path], Progress],
    min_parallel_bytes: int = MIN_PARALLEL_BYTES,
    minutes: bool = False,
) -> Iterator[tuple[Path, list[RangeResult]]]:
    """Each file with its results (range by range in file order), in the order of `paths`, whatever
    order the workers finish in. `progress_of(path)` is called once per file, in that order."""
    plans = [_plan(path, jobs, min_parallel_bytes) for path in paths]
    if sum(len(ranges) for ranges in plans) < 2:  # nothing to share: no pool at all
        plans = [[] for _ in paths]
    tasks = sum(len(ranges) for ranges in plans)
    global _WORKER_MATCHER
    _WORKER_MATCHER = matcher  # inherited by the forked workers: nothing to pickle or compile
    try:
        with _pool(min(jobs, tasks)) as pool:
            submitted = [
                [pool.submit(_scan_part, path, part, max_line_bytes, chunk_bytes, minutes) for part in ranges]
                for path, ranges in zip(paths, plans, strict=True)
            ]
            for path, futures in zip(paths, submitted, strict=True):
                yield path, _results_of(path, futures, matcher, max_line_bytes, chunk_bytes, progress_of, minutes)
    finally:
        _WORKER_MATCHER = None


WHOLE = (0, -1)  # a part that is the whole (compressed) file, read from its start


def _plan(path: Path, jobs: int, min_parallel_bytes: int) -> list[tuple[int, int]]:
    """The parts of the file for workers: its line-aligned ranges, [WHOLE] for a compressed file,
    [] to scan it in this process."""
    if jobs < 2:
        return []
    try:
        status = path.stat()
        # Only regular files: peeking at a pipe's magic bytes (`scan <(...)`) would take them from the scan.
        if not stat.S_ISREG(status.st_mode):
            return []
        if is_gzip(path):
            return [WHOLE]
    except OSError:
        return []  # read_chunks names the problem, in this process
    size = status.st_size
    if size < min_parallel_bytes:
        return []
    # Ranges of at least half the threshold each: a worker must have enough to do to pay its fork.
    ranges = _line_aligned_ranges(path, size, min(jobs, max(1, size // max(1, min_parallel_bytes // 2))))
    return ranges if len(ranges) > 1 else []  # one line longer than the file's other half, say


def _pool(workers: int) -> ProcessPoolExecutor | contextlib.nullcontext:
    if workers < 1:
        return contextlib.nullcontext()
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))


def _results_of(
    path: Path,
    futures: list[Future],
    matcher: Matcher,
    max_line_bytes: int,
    chunk_bytes: int,
    progress_of: Callable[[Path], Progress],
    minutes: bool,
) -> list[RangeResult]:
    progress = progress_of(path)
    if not futures:
        return [_scan_serial(path, matcher, max_line_bytes, chunk_bytes, progress, minutes)]
    results = [future.result() for future in futures]
    progress(_size(path))
    return results


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


_WORKER_MATCHER: Matcher | None = None


def _scan_part(path: Path, part: tuple[int, int], max_line_bytes: int, chunk_bytes: int, minutes: bool) -> RangeResult:
    """On a worker: a range of a plain file, or a whole compressed file."""
    assert _WORKER_MATCHER is not None
    if part == WHOLE:
        return _scan_serial(path, _WORKER_MATCHER, max_line_bytes, chunk_bytes, lambda _: None, minutes)
    return _scan_range(path, *part, max_line_bytes, chunk_bytes, minutes)


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
