"""A real browser for the tests: headless Chromium loads a page from disk with the network off.

No driver library: `chromium --headless --dump-dom` prints the page as its scripts left it (the
report writes what it drew into `#drawn`), `--enable-logging=stderr` prints every console message
(an uncaught error, a Content-Security-Policy violation) and `--log-net-log` records every request.

Network off, twice over: in a network namespace of its own when `unshare -n` works (as root), and
always with a proxy on a closed port and every host name unresolvable. The net log then tells the
page's own requests (made for a `file://` page) from the browser's background ones: a page that
tries to fetch anything is caught whether or not the request could have left the machine.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root in CI, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--proxy-server=127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--enable-logging=stderr",
    "--v=0",
)
_CONSOLE = re.compile(r":CONSOLE(?::\d+)?\] (.*)")
_BROWSER_OWN = re.compile(r", source: chrome(?:-untrusted)?://\S* \(\d+\)$")  # its own UI pages, not the page's


@dataclass(frozen=True)
class Loaded:
    """A page as the browser left it."""

    dom: str
    console: list[str]  # every console message, errors included
    requests: list[str]  # URLs the page itself asked for (none may leave a report)

    def drawn(self) -> dict:
        """What the report's script says it drew (`#drawn`)."""
        found = re.search(r'<pre id="drawn" hidden="">(.*?)</pre>', self.dom, re.S)
        assert found, "the page's script did not finish: no #drawn in the DOM"
        return json.loads(html.unescape(found.group(1)))


def find_chromium() -> str | None:
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


def _isolated() -> list[str]:
    """`unshare -n` as a prefix where this user may make a network namespace, else nothing."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"]
    return []


class Chromium:
    """One Chromium binary, loading pages one at a time (each load a short headless run)."""

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self.prefix = _isolated()

    def load(self, page: Path, fragment: str = "", timeout: float = 60) -> Loaded:
        with tempfile.TemporaryDirectory(prefix="chromium-") as scratch:
            netlog = Path(scratch) / "net.json"
            command = [
                *self.prefix,
                self.executable,
                *FLAGS,
                f"--user-data-dir={scratch}/profile",
                f"--log-net-log={netlog}",
                "--dump-dom",
                page.resolve().as_uri() + (f"#{fragment}" if fragment else ""),
            ]
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
            assert done.returncode == 0, done.stderr[-2000:]
            console = [m.group(1) for m in _CONSOLE.finditer(done.stderr) if not _BROWSER_OWN.search(m.group(1))]
            return Loaded(done.stdout, console, _page_requests(netlog))


def _page_requests(netlog: Path) -> list[str]:
    """URLs of requests made on behalf of a file:// page (not the browser's own background ones)."""
    if not netlog.exists():
        return []
    log = json.loads(netlog.read_text(encoding="utf-8", errors="replace") or "{}")
    start = log.get("constants", {}).get("logEventTypes", {}).get("URL_REQUEST_START_JOB")
    return [
        event["params"]["url"]
        for event in log.get("events", [])
        if event.get("type") == start and "file://" in event.get("params", {}).get("network_isolation_key", "")
    ]
