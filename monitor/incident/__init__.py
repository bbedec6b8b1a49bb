"""Incident: the one-shot commands over old logs and MongoDB, and their reports.

- `rules`: `monitor check-config`, and `monitor scan` (counts in whole files);
- `wholefile`: whole files scanned, on every core for a large plain one or several `.gz`;
- `verify`: every claim of the logs checked in MongoDB now;
- `plan` and `repair`: which lost statuses to restore, and restoring them safely;
- `explain` (with `explain_output`): everything about one analysis, and the verdict;
- `report`: tables for people, JSON for machines, the node_exporter textfile.
"""
