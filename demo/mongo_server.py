"""SecantusDB, a MongoDB wire-protocol server from PyPI, started on a loopback port.

Used by the demo and the test suite (GPL-2.0: a development dependency only,
never installed in the image).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MongoServer:
    """`secantusd-py` on 127.0.0.1:`port` (a free one by default); `storage` ":memory:" or a directory."""

    def __init__(self, storage: str = ":memory:", port: int | None = None) -> None:
        self.port = port or free_port()
        self.storage = storage
        self.url = f"mongodb://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> MongoServer:
        import pymongo

        command = shutil.which("secantusd-py", path=os.path.dirname(sys.executable)) or "secantusd-py"
        self.proc = subprocess.Popen(
            [
                command,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--storage-path",
                self.storage,
                "--log-level",
                "WARNING",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C at the terminal reaches the demo, which stops it in order
        )
        client = pymongo.MongoClient(self.url, serverSelectionTimeoutMS=500)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.admin.command("ping")
                    return self
                except pymongo.errors.PyMongoError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        self.stop()
                        raise RuntimeError("SecantusDB did not start: is the 'secantusdb' package installed?") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)


def terminate(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
