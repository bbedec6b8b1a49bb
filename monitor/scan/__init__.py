"""Scan: every rule at once over blocks of complete lines; counts and events out.

The scan stage knows rules, not files. Its parts:

- `lines`: line framing, arbitrary byte chunks in, blocks of complete lines out;
- `patterns`: what a rule's RE2 pattern means to Hyperscan, and when Hyperscan alone is exact;
- `matcher`: the compiled rules (`Matcher`), a file's `Scanner`, the `Event`s and `Tally` out;
- `readfiles`: reading old log files whole, plain or gzip, for the one-shot commands.
"""
