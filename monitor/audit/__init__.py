"""Audit: the live counts proved against the files on disk, per rule and per minute of the log's own time.

Its parts:

- `book`: what the live path counted per (stream, rule, minute), from which contents, and the
  verdicts so far (kept in the checkpoint with the counters they judge);
- `disk`: the files read again, apart from the live path, up to where it stands;
- `compare`: which minutes are comparable, and the drifts among them;
- `auditor`: the rate-limited thread running a round every `audit.interval_seconds`.
"""
