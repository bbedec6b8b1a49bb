"""Reconcile: what the log claims about analyses, checked against MongoDB.

Reconcile knows MongoDB, not files. Its parts:

- `claims`: which events claim which status (plain data, no driver);
- `reconciler`: the pending claims and their checks in batches, on this stage's own thread;
- `sweep`: the stuck sweep and the counts by status, run by the lease's holder;
- `lease`: which of many sidecars sharing a database sweeps;
- `findings`: one finding per analysis whose status MongoDB does not hold;
- `collectors`: the check's metrics, built at scrape time;
- `mongo_url`: where the URL comes from, resolved without the driver;
- `mongo`: the one PyMongo client of the process and the only queries made;
- `connect`: the gateway and the reconciler built from the config and the command line.

Nothing here is imported by this `__init__`: a log-only sidecar imports `claims` and
never loads pymongo.
"""
