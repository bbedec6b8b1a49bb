import json
import os

from monitor.state import STATE_FILE, StateStore


def test_round_trip_and_atomic_replace(tmp_path):
    store = StateStore(tmp_path / "state", clock=lambda: 1000.0)
    assert store.load() is None
    assert store.save({"files": [{"path": "分析.log", "offset": 3}]})
    assert store.save({"files": [{"path": "分析.log", "offset": 7}]})
    state = store.load()
    assert state["files"] == [{"path": "分析.log", "offset": 7}]
    assert (state["version"], state["saved_at"]) == (1, 1000.0)
    assert sorted(os.listdir(tmp_path / "state")) == [STATE_FILE]  # no temp file left behind


def test_garbage_is_set_aside_and_reported(tmp_path, caplog):
    directory = tmp_path / "state"
    directory.mkdir()
    (directory / STATE_FILE).write_bytes(b"\x00\xff garbage")
    store = StateStore(directory, clock=lambda: 1234.0)
    assert store.load() is None
    assert (directory / f"{STATE_FILE}.corrupt-1234").read_bytes() == b"\x00\xff garbage"
    assert "is corrupt" in caplog.text and "starting fresh" in caplog.text


def test_unknown_version_and_non_object(tmp_path, caplog):
    store = StateStore(tmp_path)
    (tmp_path / STATE_FILE).write_text(json.dumps({"version": 99}))
    assert store.load() is None
    assert "unknown state version 99" in caplog.text
    (tmp_path / STATE_FILE).write_text("[1, 2]")
    assert store.load() is None


def test_unwritable_directory_is_reported_not_raised(tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    store = StateStore(blocker / "state")
    assert store.save({"files": []}) is False
    assert store.failures == 1
    assert "cannot write state file" in caplog.text
