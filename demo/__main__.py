"""`python -m demo` (or `make run`): watch the sidecar catch lost status writes, live.

Starts, all on loopback: SecantusDB (a MongoDB wire-protocol server), a
simulated TradingAgents server writing the real log format with the real
faults, and `monitor run` against both. Every few seconds the terminal shows
what the sidecar counted and found beside what was injected. Ctrl-C stops
everything, in order, leaving no process behind; on the way out, `monitor verify
--report` writes the run's HTML incident report (the path is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from demo.mongo_server import MongoServer, free_port, terminate
from demo.tradingagents_server import SimulatedServer

REPO = Path(__file__).resolve().parent.parent
# The shipped profile with timings shortened so that a minute shows everything.
DEMO_TIMINGS = {
    "grace_seconds: 5 ": "grace_seconds: 1 ",
    "deadline_seconds: 120": "deadline_seconds: 10",
    "recheck_interval_seconds: 10": "recheck_interval_seconds: 1",
    "interval_seconds: 60": "interval_seconds: 3",
    "findings_kept: 200": "findings_kept: 100000",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, help="stop after this many seconds and report (default: Ctrl-C)")
    parser.add_argument("--plain", action="store_true", help="print summaries as text lines (no live table)")
    parser.add_argument("--port", type=int, help="port of the sidecar's /metrics (default: 9464 if free)")
    parser.add_argument("--workers", type=int, default=6, help="concurrent analyses (default 6)")
    parser.add_argument(
        "--report",
        type=Path,
        default=Path(tempfile.gettempdir()) / "logmonitor-demo-report.html",
        help="where the run's HTML incident report is written (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="logmonitor-demo-") as workdir:
        return Demo(Path(workdir), args).run()


class Demo:
    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        self.workdir = workdir
        self.args = args
        self.port = args.port or (9464 if _port_free(9464) else free_port())
        self.mongo = MongoServer(storage=str(workdir / "mongo"))
        self.server: SimulatedServer | None = None
        self.sidecar: subprocess.Popen | None = None

    def run(self) -> int:
        stopping = {"now": False}
        for sig in (signal.SIGTERM, signal.SIGHUP):  # also a closed terminal: never leave servers behind
            signal.signal(sig, lambda *_: stopping.update(now=True))
        started = time.monotonic()
        try:
            self._start()
            while True:
                if self.args.duration and time.monotonic() - started >= self.args.duration:
                    return self._finish()
                self._show(final=False)
                for _ in range(15):  # refresh every 3 s, react to a signal within 0.2 s
                    if stopping["now"]:
                        return 0
                    time.sleep(0.2)
        except KeyboardInterrupt:
            print("\nstopping...", file=sys.stderr)
            return 0
        finally:
            try:
                self._write_report()
            except KeyboardInterrupt:
                print("no incident report: interrupted", file=sys.stderr)
            self._stop()

    def _start(self) -> None:
        print("starting MongoDB (SecantusDB) ...", file=sys.stderr)
        self.mongo.start()
        config = self.workdir / "config.yaml"
        text = (REPO / "config.yaml").read_text(encoding="utf-8")
        for old, new in DEMO_TIMINGS.items():
            text = text.replace(old, new)
        config.write_text(text, encoding="utf-8")
        env = self.env = {
            **os.environ,
            "TRADINGAGENTS_LOG_DIR": str(self.workdir / "logs"),
            "MONGODB_URL": self.mongo.url,
            "MONITOR_STATE_DIR": str(self.workdir / "state"),
            "MONITOR_LISTEN": f"127.0.0.1:{self.port}",
            "TRADINGAGENTS_LOG_TZ": "UTC",
            "MONGODB_DB_NAME": "tradingagents",
        }
        self.sidecar_log = open(self.workdir / "sidecar.log", "wb")  # noqa: SIM115 (closed in _stop)
        self.sidecar = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(config)],
            env=env,
            stdout=self.sidecar_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()
        self.server = SimulatedServer(self.workdir / "logs", self.mongo.url, workers=self.args.workers).start()
        base = f"http://127.0.0.1:{self.port}"
        print(f"sidecar: {base}/metrics  {base}/findings  (its log: {self.workdir / 'sidecar.log'})", file=sys.stderr)
        print("simulated server log: " + str(self.workdir / "logs" / "tradingagents.log"), file=sys.stderr)
        print(f"processes: sidecar {self.sidecar.pid}, mongodb {self.mongo.proc.pid}", file=sys.stderr)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.sidecar.poll() is not None:
                raise SystemExit(f"the sidecar exited: see {self.workdir / 'sidecar.log'}")
            if self._get("/readyz") is not None:
                return
            time.sleep(0.1)
        raise SystemExit("the sidecar did not become ready within 30 s")

    def _finish(self) -> int:
        self.server.stop()
        print("simulator stopped; waiting for the last checks (deadline 10 s) ...", file=sys.stderr)
        time.sleep(12)
        caught = self._show(final=True)
        return 0 if caught else 1

    def _write_report(self) -> None:
        """The run's incident report, as an operator would make it: `monitor verify --report` over
        the simulated server's logs (their rotated files too), against its MongoDB."""
        if self.server is None:
            return
        self.server.stop(late_writes_land=False)
        config, report = str(self.workdir / "config.yaml"), str(self.args.report.resolve())
        done = subprocess.run(  # from the logs' directory: the page names the files, not the temp dir
            [sys.executable, "-m", "monitor", "verify", "tradingagents.log*", "--config", config, "--report", report],
            cwd=self.workdir / "logs",
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
        if done.returncode in (0, 1) and self.args.report.exists():
            print(f"incident report of this run: {self.args.report} (open it in a browser)")
        else:
            why = f"`monitor verify` exited {done.returncode}: {done.stderr[-500:]}"
            print(f"no incident report: {why}", file=sys.stderr)

    def _stop(self) -> None:
        if self.server is not None:
            self.server.stop(late_writes_land=False)
        if self.sidecar is not None:
            terminate(self.sidecar)
            self.sidecar_log.close()
        self.mongo.stop()

    # -- what to show ------------------------------------------------------------------

    def _get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.read().decode()
        except OSError:
            return None

    def _rows(self) -> tuple[list[tuple[str, int, str]], bool]:
        metrics = _samples(self._get("/metrics") or "")
        findings = json.loads(self._get("/findings") or "[]")
        truth = self.server.truth
        with truth.lock:
            faults, lost, late, stuck = dict(truth.faults), set(truth.lost_ids), set(truth.late_ids), truth.stuck_ids
            analyses = truth.analyses

        def events(rule: str, **wanted: str) -> int:
            pairs = {("rule", rule), *wanted.items()}
            return int(
                sum(
                    v
                    for (name, labels), v in metrics.items()
                    if name == "tradingagents_log_events_total" and pairs <= set(labels)
                )
            )

        flagged = {f["analysis_id"] for f in findings if f["outcome"] in ("status_mismatch", "not_found")}
        stuck_found = int(metrics.get(("tradingagents_analyses_stuck", ()), 0))
        rows = [
            (
                "event-loop error (the original bug)",
                faults.get("event_loop_error", 0),
                str(events("event_loop_regression")),
            ),
            (
                "MongoDB timeouts",
                faults.get("timeout", 0) + faults.get("timeout_landed", 0),
                str(events("mongodb_operation_timeout")),
            ),
            (
                "'MongoDB更新返回None' warnings",
                faults.get("event_loop_error", 0) + faults.get("timeout", 0) + faults.get("timeout_landed", 0),
                str(events("mongodb_update_returned_none")),
            ),
            ("failed analyses", faults.get("analysis_failed", 0), str(events("analysis_execution_failed"))),
            (
                "unsuccessful results ('成功: False')",
                faults.get("result_unsuccessful", 0) + faults.get("unsuccessful_lost", 0),
                str(events("analysis_finished", success="False")),
            ),
            (
                "status writes lost (found in MongoDB)",
                len(lost),
                f"{len(lost & flagged)} (+{len(lost - flagged)} in check)",
            ),
            ("late writes that landed (not flagged)", len(late), str(len(late - flagged))),
            ("analyses stuck pending", len(stuck), str(stuck_found)),
            ("false alarms", 0, str(len(flagged - lost))),
        ]
        caught = (
            lost <= flagged
            and not (flagged - lost)
            and stuck_found == len(stuck)
            and events("event_loop_regression") == faults.get("event_loop_error", 0)
        )
        rows.insert(
            0,
            (
                "analyses run",
                analyses,
                str(
                    int(
                        sum(
                            v
                            for (name, labels), v in metrics.items()
                            if name == "tradingagents_log_events_total" and ("rule", "analysis_started") in labels
                        )
                    )
                ),
            ),
        )
        return rows, caught

    def _show(self, final: bool) -> bool:
        rows, caught = self._rows()
        if self.args.plain or not sys.stdout.isatty():
            title = "final" if final else time.strftime("%H:%M:%S")
            print(f"--- {title}: injected / caught by the sidecar")
            for name, injected, found in rows:
                print(f"{name:45} {injected:6} / {found}")
            if final:
                print("every fault caught" if caught else "NOT every fault was caught")
            return caught
        from rich.console import Console
        from rich.table import Table

        table = Table(title="TradingAgents log monitor demo" + (" (final)" if final else " (Ctrl-C to stop)"))
        table.add_column("what happened")
        table.add_column("injected", justify="right")
        table.add_column("caught by the sidecar", justify="right")
        for name, injected, found in rows:
            table.add_row(name, str(injected), found)
        console = Console()
        if not final:
            console.clear()
        console.print(table)
        console.print(
            f"metrics: http://127.0.0.1:{self.port}/metrics   findings: http://127.0.0.1:{self.port}/findings"
        )
        if final:
            console.print("[green]every fault caught[/]" if caught else "[red]not every fault was caught[/]")
        return caught


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


if __name__ == "__main__":
    sys.exit(main())
