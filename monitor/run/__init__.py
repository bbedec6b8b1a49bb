"""Run: `monitor run`, the sidecar, assembled from the stages and kept running.

- `assemble`: from the config and the command line to the parts (pure construction);
- `pipeline`: the follower's items through the scanner into metrics and claims;
- `loop`: when to look at the files, when to list them again, when to checkpoint;
- `snapshot`, `checkpoint`, `legacy_state`: what survives a restart, its format, its migration;
- `statedir`: the state directory: checked at start, locked by one sidecar, made again if deleted;
- `state`: the consistent cut of every owner's state, saved and restored;
- `sidecar`: the parts started, served, reloaded and stopped.
"""
