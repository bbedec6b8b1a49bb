"""The self-audit through the sidecar's life: stop and start (the book is checkpointed), a restart in
the middle of a traceback, a reload of the rules. None of them may raise a false drift."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry

from monitor.run.sidecar import RunOptions, Sidecar
from tests.conftest import MINIMAL_CONFIG

T0 = 1_761_113_940.0  # a minute boundary
TRACEBACK_RULE = """\
  - name: execution_timeout
    severity: error
    pattern: 'pymongo.errors.ExecutionTimeout'
    examples: ['pymongo.errors.ExecutionTimeout: operation exceeded time limit']
"""


def stamp(index: int) -> str:
    return datetime.fromtimestamp(T0 + index * 0.211, UTC).strftime("%Y-%m-%d %H:%M:%S,%f")[:23]


def record(index: int) -> str:
    """A record; every fifth an ERROR with a traceback whose last line matches its own rule."""
    head = f"{stamp(index)} | backend.server | INFO     | server:worker:1 | "
    if index % 5 == 0:
        return (
            f"{stamp(index)} | backend.server | ERROR    | server:worker:1 | MongoDB操作超时\n"
            "Traceback (most recent call last):\n"
            '  File "/app/server.py", line 215, in safe_mongodb_operation\n'
            "pymongo.errors.ExecutionTimeout: operation exceeded time limit\n"
        )
    return head + f"分析 {index:024x} 进度: 50%\n"


def write(log: Path, first: int, last: int, cut_traceback: bool = False) -> None:
    text = "".join(record(i) for i in range(first, last))
    if cut_traceback:  # stop in the middle of the last record's traceback
        text = text[: text.rindex("Traceback")]
    with open(log, "a", encoding="utf-8") as f:
        f.write(text)


def sidecar_for(tmp_path: Path, log: Path, config: Path) -> Sidecar:
    sidecar = Sidecar(RunOptions(config, (f"app={log}",), "127.0.0.1:0", str(tmp_path / "state")), CollectorRegistry())
    sidecar.start()
    return sidecar


def audit(sidecar: Sidecar) -> dict[str, float]:
    sidecar.loop.run_pass()
    sidecar.auditor.run_round()
    found = {}
    for metric in sidecar.registry.collect():
        for sample in metric.samples:
            if sample.name.startswith("logmonitor_audit_") and sample.value and "bytes" not in sample.name:
                labels = ",".join(f"{v}" for k, v in sorted(sample.labels.items()) if k not in ("stream",))
                found[f"{sample.name[len('logmonitor_audit_') :]}{{{labels}}}"] = sample.value
    return found


def test_stop_start_mid_traceback_and_a_reload_audit_clean(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(MINIMAL_CONFIG + TRACEBACK_RULE + "follow:\n  start_at: beginning\n", encoding="utf-8")
    log = tmp_path / "app.log"
    write(log, 0, 1136, cut_traceback=True)  # records 0.211 s apart: up to 239.6 s, the 4th minute
    first = sidecar_for(tmp_path, log, config)
    assert audit(first) == {"rounds_total{clean}": 1, "minutes_total{}": 3, "files_total{}": 1}
    assert first.shutdown()

    # Written while it was down: the rest of the cut traceback (lines without a time, one matching
    # a rule), then records from 240.1 s on, in the next minute.
    with open(log, "a", encoding="utf-8") as f:
        f.write(record(1135)[record(1135).index("Traceback") :])
    write(log, 1138, 2000)
    second = sidecar_for(tmp_path, log, config)
    try:
        found = audit(second)
        assert second.metrics.event_count("execution_timeout") == 400  # 228 + 172: each once
        # The restarted live path cannot tell the continuation line's minute (the 4th, by the line
        # before it); the audit can. So the minutes up to the next timestamp (the 5th) are left out,
        # and the 6th to the 8th compared: 3 + 3, the counts and the verdicts kept through the stop.
        assert found == {"rounds_total{clean}": 2, "minutes_total{}": 6, "files_total{}": 2}

        # New rules: what the old ones counted is not compared with what the new ones find.
        config.write_text(config.read_text(encoding="utf-8").replace("MongoDB操作超时", "MongoDB操作"), "utf-8")
        assert second.reload()
        write(log, 2000, 2600)  # 422 s to 548 s: the 8th minute straddles the reload
        found = audit(second)
        assert found == {"rounds_total{clean}": 3, "minutes_total{}": 8, "files_total{}": 3}
    finally:
        second.shutdown()
