"""Capped labels: which values of a rule's capture label get a series of their own.

A rule's label may be capped (`labels: {symbol: 50}`): the first 50 distinct values
seen get their own series, in the order they were first seen; every later value
is counted as "other" and as a label overflow. The admitted values are part of the
counters' state: restored from the checkpoint, so a restart admits nothing twice.
"""

from __future__ import annotations

from monitor.config import Rule
from monitor.scan.matcher import OTHER

LabelPairs = tuple[tuple[str, str], ...]


class LabelCaps:
    """The caps of every rule and the values admitted under them (guarded by the caller's lock)."""

    def __init__(self) -> None:
        self._caps: dict[str, dict[str, int]] = {}  # rule -> capped label -> max distinct values
        self._admitted: dict[tuple[str, str], set[str]] = {}

    def declare(self, rule: Rule) -> dict[str, int]:
        """Take a rule's caps (a reload may add some; values admitted before stay); returns them."""
        caps = {name: cap for name, cap in rule.labels.items() if isinstance(cap, int)}
        if caps:
            self._caps[rule.name] = caps
            for name in caps:
                self._admitted.setdefault((rule.name, name), set())
        return caps

    def admit(self, rule: str, labels: LabelPairs) -> tuple[LabelPairs, int]:
        """The labels with each capped value admitted while the rule has room for it, else "other";
        and how many values were not admitted."""
        caps = self._caps.get(rule)
        if not caps:
            return labels, 0
        bounded = []
        overflowed = 0
        for name, value in labels:
            cap = caps.get(name)
            if cap is not None and value != OTHER:
                admitted = self._admitted[(rule, name)]
                if value not in admitted:
                    if len(admitted) >= cap:
                        overflowed += 1
                        value = OTHER
                    else:
                        admitted.add(value)
            bounded.append((name, value))
        return tuple(bounded), overflowed

    def restore(self, rule: str, labels: LabelPairs) -> None:
        """A series restored from the checkpoint: its values stay admitted."""
        for name, value in labels:
            if (rule, name) in self._admitted and value != OTHER:
                self._admitted[(rule, name)].add(value)
