"""Run: `monitor run`, the sidecar, assembled from the stages and kept running.

- `assemble`: from the config and the command line to the parts (pure construction);
- `pipeline`: the follower's items through the scanner into metrics and claims;
- `loop`: when to look at the files, when to list them again, when to checkpoint;
- `snapshot`: what survives a restart, as plain values, and the rules a restored value must meet;
- `rows`: the checkpoint's format: its tables, read whole, written as what changed;
- `checkpoint`: the database's life: loaded, staged, flushed, set aside, made again;
- `legacy_state`: the previous format, migrated once;
- `statedir`: the state directory: checked at start, locked by one sidecar, made again if deleted;
- `state`: the consistent cut of every owner's state, saved and restored;
- `sidecar`: the parts started, served, reloaded and stopped.
"""
