"""The commands a user runs, end to end, as subprocesses."""

from __future__ import annotations

import gzip
import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from tests.conftest import GOLDEN, MINIMAL_CONFIG, REPO, log_line, run_monitor
from tests.sidecar_process import wait_for

ENV = {"TRADINGAGENTS_LOG_TZ": "Asia/Shanghai"}
SAMPLE = str(GOLDEN / "tradingagents.log")
SAMPLE_LINES = (GOLDEN / "tradingagents.log").read_text(encoding="utf-8").splitlines(keepends=True)


def test_check_config_lists_rules_and_says_ok():
    result = run_monitor("check-config")
    assert result.returncode == 0, result.stderr
    assert "config.yaml: OK, 14 rules, 17 example lines matched" in result.stdout
    assert "mongodb_operation_timeout" in result.stdout


def test_check_config_shows_a_label_capped_by_a_number(write_config):
    config = write_config(
        """\
        version: 1
        rules:
          - name: completed
            severity: success
            pattern: '✅ 分析完成状态已更新到数据库: (?P<analysis>\\S+)'
            labels: {analysis: 1000}
            examples: ['x | ✅ 分析完成状态已更新到数据库: 68f8741c3512a67997df93d2']
        """
    )
    result = run_monitor("check-config", str(config), env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "analysis: first 1000 values seen" in result.stdout
    assert result.stderr == ""


def test_check_config_takes_a_file_argument_or_flag(tmp_path):
    shutil.copy(REPO / "config.yaml", tmp_path / "other.yaml")
    assert run_monitor("check-config", str(tmp_path / "other.yaml"), cwd=tmp_path).returncode == 0
    assert run_monitor("check-config", "--config", str(tmp_path / "other.yaml"), cwd=tmp_path).returncode == 0
    result = run_monitor("check-config", cwd=tmp_path)
    assert result.returncode == 2
    assert "config.yaml: no such config file; pass --config FILE" in result.stderr


def test_version_is_the_package_version():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    result = run_monitor("--version")
    assert result.returncode == 0
    assert result.stdout == f"monitor (tradingagents-logmonitor) {pyproject['project']['version']}\n"


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


def textfile(path: Path) -> dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]]:
    """name -> (type, {sorted labels: value}) of a node_exporter textfile."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        family.name: (family.type, {tuple(sorted(s.labels.items())): s.value for s in family.samples})
        for family in text_string_to_metric_families(path.read_text(encoding="utf-8"))
    }


def test_metrics_out_writes_gauges_of_the_files_as_they_are_not_counters(tmp_path):
    out = tmp_path / "textfile" / "tradingagents.prom"
    out.parent.mkdir()
    before = time.time()
    result = run_monitor("scan", SAMPLE, "--metrics-out", str(out), env=ENV)
    assert result.returncode == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    assert not re.search(r"^\w+_total\b", text, flags=re.M)
    assert {line.split()[-1] for line in text.splitlines() if line.startswith("# TYPE")} == {"gauge"}
    families = textfile(out)
    assert {kind for kind, _ in families.values()} == {"gauge"}
    _, matched = families["tradingagents_log_lines_matched_in_files"]
    assert matched[(("rule", "mongodb_update_returned_none"), ("severity", "warning"))] == 3
    assert matched[(("rule", "analysis_finished"), ("severity", "info"), ("success", "False"))] == 2
    assert matched[(("rule", "status_update_failed"), ("severity", "warning"))] == 0  # every rule, 0 included
    assert families["tradingagents_log_scanned_lines"][1] == {(): 97}
    assert families["tradingagents_log_scanned_files"][1] == {(): 1}
    assert families["tradingagents_scan_errors"][1] == {(): 0}
    (stamp,) = families["tradingagents_scan_timestamp_seconds"][1].values()
    assert before - 1 <= stamp <= time.time() + 1

    # After a rotation the files hold fewer lines: the value falls, as a gauge may (a counter
    # falling would be read as a reset by increase(), which would invent the new lines).
    rotated = tmp_path / "tradingagents.log"
    rotated.write_text("".join(SAMPLE_LINES[:35]), encoding="utf-8")
    assert run_monitor("scan", str(rotated), "--metrics-out", str(out), env=ENV).returncode == 0
    assert textfile(out)["tradingagents_log_scanned_lines"] == ("gauge", {(): 35})


def test_metrics_out_is_replaced_atomically_and_readable_by_node_exporter(tmp_path):
    directory = tmp_path / "textfile"
    directory.mkdir()
    out = directory / "tradingagents.prom"
    out.write_text("old\n", encoding="utf-8")
    old_inode = out.stat().st_ino
    assert run_monitor("scan", SAMPLE, "--metrics-out", str(out), env=ENV).returncode == 0
    assert out.stat().st_ino != old_inode  # a new file renamed over the old one, never rewritten in place
    assert [p.name for p in directory.iterdir()] == ["tradingagents.prom"]  # no temporary file left
    assert out.stat().st_mode & 0o444 == 0o444
    result = run_monitor("scan", SAMPLE, "--metrics-out", str(tmp_path / "absent" / "x.prom"), env=ENV)
    assert result.returncode == 2
    assert f"monitor: --metrics-out {tmp_path / 'absent' / 'x.prom'}: cannot write it" in result.stderr
    assert "Traceback" not in result.stderr


def test_quoted_globs_are_expanded_in_order_without_a_shell(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for suffix in ("", ".1", ".2"):
        shutil.copy(GOLDEN / "tradingagents.log", logs / f"tradingagents.log{suffix}")
    (logs / "other.txt").write_text("", encoding="utf-8")
    # As `kubectl exec ... -- monitor scan /app/logs/tradingagents.log*` passes it: no shell, no expansion.
    result = run_monitor(
        "scan", str(logs / "tradingagents.log.[12]"), str(logs / "tradingagents.log*"), "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["files"] == [str(logs / f"tradingagents.log{s}") for s in (".1", ".2", "")]  # each once
    assert report["lines"] == 3 * 97
    # A file whose name holds glob characters is taken as it is.
    odd = logs / "odd[1].log"
    shutil.copy(GOLDEN / "tradingagents.log", odd)
    result = run_monitor("scan", str(odd), "--format", "json")
    assert (result.returncode, json.loads(result.stdout)["files"]) == (0, [str(odd)])


def test_a_glob_matching_nothing_is_named_and_exits_2_the_rest_still_counted(tmp_path):
    pattern = str(tmp_path / "tradingagents.log.*.gz")
    result = run_monitor("scan", pattern, SAMPLE, "--format", "json")
    assert result.returncode == 2
    assert f"monitor: {pattern}: no file matches this pattern" in result.stderr
    report = json.loads(result.stdout)
    assert (report["files"], report["lines"]) == ([SAMPLE], 97)
    assert report["errors"] == [f"{pattern}: no file matches this pattern"]


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
    from monitor.cli import EscapingFormatter

    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1, "file %s gone", ("a\x1b[31m\nFAKE 2025 ERROR forged\r",), None
    )
    text = EscapingFormatter("%(levelname)s %(message)s").format(record)
    assert text == "WARNING file a\\x1b[31m\\x0aFAKE 2025 ERROR forged\\x0d gone"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", ("\x1b" * 20_000,), None)
    assert len(EscapingFormatter("%(levelname)s %(message)s").format(record)) <= 16_384  # escaped, then bounded


def test_our_own_line_breaks_are_lines_later_lines_indented(tmp_path):
    from monitor.config import ConfigError
    from monitor.logs import EscapingFormatter

    formatter = EscapingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    error = ConfigError("config.yaml:5: rules[0].pattern: does not compile\nconfig.yaml:9: a\x1b[2J: unknown key")
    record = logging.LogRecord("monitor.sidecar", logging.ERROR, __file__, 1, "reload failed:\n%s", (error,), None)
    lines = formatter.format(record).split("\n")
    assert lines[0].endswith("ERROR monitor.sidecar: reload failed:")
    assert lines[1:] == [
        "  config.yaml:5: rules[0].pattern: does not compile",
        "  config.yaml:9: a\\x1b[2J: unknown key",
    ]
    try:
        raise ValueError("boom\n2025-10-22 14:20:02,123 ERROR forged")
    except ValueError:
        record = logging.LogRecord("m", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    lines = formatter.format(record).split("\n")
    assert all(line.startswith("  ") for line in lines[1:]) and lines[-1] == "  2025-10-22 14:20:02,123 ERROR forged"


def test_a_failed_reload_logs_the_config_errors_as_lines(tmp_path, sidecars):
    config = tmp_path / "config.yaml"
    config.write_text(MINIMAL_CONFIG, encoding="utf-8")
    log = tmp_path / "app.log"
    log.touch()
    sidecar = sidecars(tmp_path, "--log", str(log), config=config).start()
    broken = MINIMAL_CONFIG + "extra: 1\nmore: 2\n"
    config.write_text(broken, encoding="utf-8")
    sidecar.signal(signal.SIGHUP)
    wait_for(lambda: "config reload failed" in sidecar.stderr(), what="the reload failure")
    text = sidecar.stderr()
    assert "\\x0a" not in text
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "config reload failed" in line)
    said = lines[start + 1 : start + 3]
    assert all(line.startswith("  ") for line in said), lines
    assert "extra: unknown key 'extra'" in said[0] and "more: unknown key 'more'" in said[1], lines


def test_errors_on_stderr_keep_line_breaks_and_escape_file_names(tmp_path):
    (tmp_path / "config.yaml").write_text(MINIMAL_CONFIG + "extra: 1\nmore: 2\n", encoding="utf-8")
    result = run_monitor("check-config", cwd=tmp_path)
    assert result.returncode == 2
    assert "\\x0a" not in result.stderr
    assert result.stderr.splitlines()[0] == "monitor: invalid configuration:"
    assert len(result.stderr.splitlines()) == 3  # one line per problem
    hostile = tmp_path / "a\x1bc\x07\nmonitor: forged.log"
    result = run_monitor("scan", str(hostile), "--format", "json")
    assert result.returncode == 2
    name = str(tmp_path / "a\\x1bc\\x07\\x0amonitor: forged.log")
    assert result.stderr == f"monitor: {name}: no such file\n"


def test_log_flags_before_or_after_the_command():
    from monitor.cli import _parser

    parse = _parser().parse_args
    assert (parse(["scan", "x"]).log_level, parse(["scan", "x"]).log_format) == ("info", "text")
    assert parse(["--log-format", "json", "scan", "x"]).log_format == "json"
    assert parse(["scan", "x", "--log-format", "json", "--log-level", "debug"]).log_level == "debug"
    assert parse(["--log-level", "error", "run", "--log-level", "warning"]).log_level == "warning"  # the command's wins
    result = run_monitor("run", "--log-level", "verbose")
    assert result.returncode == 2 and "invalid choice: 'verbose'" in result.stderr


def test_run_logs_json_lines_and_each_finding_is_one_object(tmp_path, sidecars, mongo):
    from bson import ObjectId

    url, name, _ = mongo
    config = tmp_path / "fast.yaml"
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    for old, new in [("grace_seconds: 5 ", "grace_seconds: 0.1 "), ("deadline_seconds: 120", "deadline_seconds: 1")]:
        text = text.replace(old, new)
    config.write_text(text, encoding="utf-8")
    log = tmp_path / "app.log"
    log.touch()
    flags = ("--log", str(log), "--mongo-url", url, "--mongo-db", name, "--log-format", "json")
    sidecar = sidecars(tmp_path, *flags, config=config).start()
    lost = str(ObjectId())
    with open(log, "a", encoding="utf-8") as f:
        f.write(log_line(f"✅ 分析完成状态已更新到数据库: {lost}") + "\n")
    wait_for(lambda: lost in sidecar.stderr(), what="the finding")
    sidecar.stop()
    records = [json.loads(line) for line in sidecar.stderr().splitlines()]  # every line is one JSON object
    for record in records:
        assert list(record)[:4] == ["time", "level", "logger", "message"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
    assert any(r["logger"] == "monitor.sidecar" and r["message"].startswith("following app=") for r in records)
    (finding,) = [r for r in records if r["logger"] == "monitor.findings"]
    assert (finding["level"], finding["message"]) == ("warning", "finding")
    assert (finding["analysis_id"], finding["outcome"]) == (lost, "not_found")
    assert finding["claims"][0]["claim"] == "completed_status_written"
    assert finding["claims"][0]["expected"] == ["completed", "failed", "cancelled"]

    quiet = tmp_path / "quiet"
    quiet.mkdir()
    sidecar = sidecars(quiet, "--log", str(log), "--log-format", "json", "--log-level", "warning").start()
    sidecar.stop()
    assert [json.loads(line)["level"] for line in sidecar.stderr().splitlines()] in ([], ["warning"])


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
    try:
        out, _ = process.communicate(timeout=120)
    finally:  # a scan that hangs is not left behind
        if process.poll() is None:
            process.kill()
            process.wait()
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


def test_scan_keeps_its_compiled_rules_in_the_users_cache_and_counts_the_same(tmp_path):
    """Compiling the rules is a third of a `scan` of ten rotated logs: the second run loads them."""
    cache = tmp_path / "cache"
    first = run_monitor("scan", SAMPLE, "--format", "json", env={"XDG_CACHE_HOME": str(cache)})
    assert first.returncode == 0, first.stderr
    kept = sorted(p.name for p in (cache / "tradingagents-logmonitor" / "scan").iterdir())
    assert len(kept) == 1 and kept[0].startswith("rules-") and kept[0].endswith(".hsdb"), kept
    second = run_monitor("scan", SAMPLE, "--format", "json", env={"XDG_CACHE_HOME": str(cache)})
    assert second.returncode == 0 and second.stdout == first.stdout
    assert sorted(p.name for p in (cache / "tradingagents-logmonitor" / "scan").iterdir()) == kept
    # A cache that cannot be made (a file where its folder would be) costs a compile, nothing else.
    blocked = tmp_path / "blocked"
    blocked.write_text("not a directory")
    third = run_monitor("scan", SAMPLE, "--format", "json", env={"XDG_CACHE_HOME": str(blocked)})
    assert (third.returncode, third.stdout, third.stderr) == (0, first.stdout, first.stderr)


def test_the_rules_cache_is_the_users_or_none():
    from monitor.cli import rules_cache

    assert rules_cache("scan", {"XDG_CACHE_HOME": "/c"}) == Path("/c/tradingagents-logmonitor/scan")
    assert rules_cache("verify", {"HOME": "/home/ops"}) == Path("/home/ops/.cache/tradingagents-logmonitor/verify")
    assert rules_cache("scan", {"XDG_CACHE_HOME": "relative", "HOME": "/h"}) == Path(
        "/h/.cache/tradingagents-logmonitor/scan"
    )
    assert rules_cache("scan", {"XDG_CACHE_HOME": "relative"}) is None  # the spec: a relative one is ignored
    assert rules_cache("scan", {}) is None
