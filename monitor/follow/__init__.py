"""Follow: one configured stream of paths looks like one perpetual source of bytes.

The follow stage knows files, not rules. Its parts, one kind of state each:

- `items`: the plain values in and out (streams, settings, `Data`/`Flush`/`End`, `Position`);
- `discover`: which files a stream's paths and globs name now (bounded; path problems said once);
- `file`: one followed file and every decision about it (grown, truncated, rotated, idle);
- `table`: the followed files by identity, each followed at most once (the one owner of open handles);
- `restore`: checkpointed files found again at start-up, under their names or beside them;
- `copies`: whether a file is a copy of a followed one, maybe one still being written, or new;
- `known`: files known without being followed (read before, or there before the first start);
- `descriptors`: how many more files may be opened, leaving some for the endpoint and the checkpoint;
- `watch`: inotify wake-ups for the follow loop;
- `identity`: how a file is recognised (inode + fingerprint, copies);
- `stats`: the follower's own counters and gauges;
- `follower`: the pass that ties them together;
- `fs`: the file-system calls, passed in with real defaults.
"""

from monitor.follow.follower import Follower
from monitor.follow.fs import REAL, FileSystem
from monitor.follow.identity import Identity
from monitor.follow.items import Data, End, Extent, Flush, FollowSettings, Item, Position, StreamSpec
from monitor.follow.stats import StreamStats

__all__ = [
    "REAL",
    "Data",
    "End",
    "Extent",
    "FileSystem",
    "Flush",
    "FollowSettings",
    "Follower",
    "Identity",
    "Item",
    "Position",
    "StreamSpec",
    "StreamStats",
]
