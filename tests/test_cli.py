"""The commands a user runs, end to end, as subprocesses."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import GOLDEN, REPO, log_line, run_monitor

ENV = {"TRADINGAGENTS_LOG_TZ": "Asia/Shanghai"}
SAMPLE = str(GOLDEN / "tradingagents.log")


def test_check_config_lists_rules_and_says_ok():
    result = run_monitor("check-config")
    assert result.returncode == 0, result.stderr
    assert "config.yaml: OK, 14 rules, 17 example lines matched" in result.stdout
    assert "mongodb_operation_timeout" in result.stdout


def test_check_config_takes_a_file_argument_or_flag(tmp_path):
    shutil.copy(REPO / "config.yaml", tmp_path / "other.yaml")
    assert run_monitor("check-config", str(tmp_path / "other.yaml"), cwd=tmp_path).returncode == 0
    assert run_monitor("check-config", "--config", str(tmp_path / "other.yaml"), cwd=tmp_path).returncode == 0
    result = run_monitor("check-config", cwd=tmp_path)
    assert result.returncode == 2
    assert "config.yaml: no such config file; pass --config FILE" in result.stderr


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("monitor")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0
    assert "check-config" in result.stdout


def test_scan_table():
    result = run_monitor("scan", SAMPLE, env=ENV)
    assert result.returncode == 0, result.stderr
    assert "97 lines, 17561 bytes in 1 file(s)" in result.stdout
    row = next(line for line in result.stdout.splitlines() if "mongodb_update_returned_none" in line)
    assert row.split("│")[3].strip() == "3"


def test_scan_json_counts_plain_and_gzip_files(tmp_path):
    packed = tmp_path / "tradingagents.log.2.gz"
    packed.write_bytes(gzip.compress((GOLDEN / "tradingagents.log").read_bytes()))
    result = run_monitor("scan", SAMPLE, str(packed), "--format", "json", env=ENV)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    counts = {row["rule"]: row["count"] for row in report["rules"]}
    assert counts["analysis_completed_status_persisted"] == 20
    assert counts["event_loop_regression"] == 4
    assert counts["status_update_failed"] == 0
    assert (report["lines"], report["bytes"], report["oversized_lines"]) == (194, 35122, 0)


def test_scan_of_a_large_file_on_two_processes_counts_what_one_does(tmp_path):
    # 33 MiB of the sample log repeated: above the size where `scan` cuts a file at line ends.
    sample = (GOLDEN / "tradingagents.log").read_bytes()
    copies = (33 << 20) // len(sample) + 1
    big = tmp_path / "big.log"
    with open(big, "wb") as out:
        for _ in range(copies):
            out.write(sample)
    reports = []
    for jobs in ("1", "2"):
        result = run_monitor("scan", str(big), "--format", "json", "--jobs", jobs, env=ENV)
        assert result.returncode == 0, result.stderr
        reports.append(json.loads(result.stdout))
    assert reports[0] == reports[1]
    counts = {row["rule"]: row["count"] for row in reports[1]["rules"]}
    assert counts["analysis_completed_status_persisted"] == 10 * copies
    assert reports[1]["lines"] == 97 * copies
    result = run_monitor("scan", SAMPLE, "--jobs", "0")
    assert result.returncode == 2 and "--jobs/-j: '0' is not a whole number of 1 or more" in result.stderr


def test_fail_on_error_exits_1_only_when_an_error_rule_matched(tmp_path):
    assert run_monitor("scan", SAMPLE, "--fail-on", "error").returncode == 1
    calm = tmp_path / "calm.log"
    calm.write_text(log_line("✅ 分析完成状态已更新到数据库: 68f8741c3512a67997df93d2") + "\n", encoding="utf-8")
    assert run_monitor("scan", str(calm), "--fail-on", "error").returncode == 0
    warn = tmp_path / "warn.log"
    warn.write_text(log_line("⚠️ MongoDB更新返回None，可能更新失败", "WARNING") + "\n", encoding="utf-8")
    assert run_monitor("scan", str(warn), "--fail-on", "error").returncode == 0
    assert run_monitor("scan", str(warn), "--fail-on", "warning").returncode == 1


def test_metrics_out_is_the_golden_exposition(tmp_path):
    out = tmp_path / "textfile" / "tradingagents.prom"
    out.parent.mkdir()
    result = run_monitor("scan", SAMPLE, "--metrics-out", str(out), env=ENV)
    assert result.returncode == 0, result.stderr
    assert out.read_text(encoding="utf-8") == (GOLDEN / "tradingagents.prom").read_text(encoding="utf-8")


def test_unreadable_file_is_named_the_rest_still_counted_exit_2(tmp_path):
    result = run_monitor("scan", str(tmp_path / "absent.log"), SAMPLE, "--format", "json")
    assert result.returncode == 2
    assert f"monitor: {tmp_path / 'absent.log'}: no such file" in result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert report["lines"] == 97
    assert report["errors"] == [f"{tmp_path / 'absent.log'}: no such file"]


def test_bad_bytes_in_a_log_are_counted_not_fatal(tmp_path):
    log = tmp_path / "odd.log"
    log.write_bytes(b"\xff\xfe\x00garbage\r\n" + log_line("MongoDB操作超时", "ERROR").encode() + b"\r\n\x80")
    result = run_monitor("scan", str(log), "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {r["rule"]: r["count"] for r in report["rules"]}["mongodb_operation_timeout"] == 1
    assert report["lines"] == 3


def test_control_characters_never_reach_the_sidecar_log_raw(tmp_path):
    import logging

    from monitor.cli import EscapingFormatter

    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1, "file %s\nFAKE 2025 ERROR forged", ("a\x1b[31m",), None
    )
    text = EscapingFormatter("%(levelname)s %(message)s").format(record)
    assert text == "WARNING file a\\x1b[31m\\x0aFAKE 2025 ERROR forged"


def test_progress_bar_on_a_terminal_only(tmp_path):
    import os
    import pty
    import sys

    big = tmp_path / "big.log"
    big.write_bytes((GOLDEN / "tradingagents.log").read_bytes() * 700)  # ~12 MB, above the 8 MiB threshold
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "monitor", "scan", str(big), "--format", "json"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**os.environ, "COLUMNS": "100"},
    )
    os.close(slave)
    out, _ = process.communicate(timeout=120)
    terminal = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        terminal += chunk
    os.close(master)
    assert process.returncode == 0
    assert b"scanning" in terminal  # the bar was drawn on the terminal ...
    assert json.loads(out)["lines"] == 97 * 700  # ... and stdout stayed clean JSON
    piped = run_monitor("scan", str(big), "--format", "json")
    assert piped.stderr == ""  # no bar when stderr is not a terminal
