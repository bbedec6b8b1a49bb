"""Every kind of config mistake gives one message naming file, line, field and remedy."""

from __future__ import annotations

import pytest

from monitor.config import ConfigError, load_config, parse_listen
from tests.conftest import MINIMAL_CONFIG, REPO, run_monitor


def error_of(write_config, text: str, environ: dict[str, str] | None = None) -> str:
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ or {})
    return str(info.value)


def test_the_shipped_profile_loads():
    loaded = load_config(REPO / "config.yaml", environ={})
    names = [r.name for r in loaded.config.rules]
    assert len(names) == 14
    assert loaded.config.timestamp.timezone == "Asia/Shanghai"
    assert loaded.config.metrics.listen == "127.0.0.1:9464"


def test_environment_references_are_expanded(write_config):
    path = write_config(MINIMAL_CONFIG + "metrics:\n  listen: ${LISTEN}\n  prefix: ${PREFIX:-ta}\n")
    config = load_config(path, environ={"LISTEN": "0.0.0.0:9100"}).config
    assert (config.metrics.listen, config.metrics.prefix) == ("0.0.0.0:9100", "ta")


def test_unset_environment_variable(write_config):
    message = error_of(write_config, MINIMAL_CONFIG + "metrics:\n  listen: ${NOPE}\n")
    assert message.endswith(
        "config.yaml:16: metrics.listen: environment variable NOPE is not set; set it or write ${NOPE:-default}"
    )


def test_unknown_key_names_its_line_and_path(write_config):
    message = error_of(
        write_config, MINIMAL_CONFIG.replace("    severity: warning\n", "    severity: warning\n    sevrity: x\n")
    )
    assert message.endswith("config.yaml:9: rules[1].sevrity: unknown key 'sevrity'; check its spelling or remove it")


def test_wrong_type(write_config):
    message = error_of(write_config, MINIMAL_CONFIG + "scan:\n  max_line_bytes: lots\n")
    assert "config.yaml:16: scan.max_line_bytes: Input should be a valid integer" in message


def test_bad_severity(write_config):
    message = error_of(write_config, MINIMAL_CONFIG.replace("severity: error", "severity: fatal"))
    assert "config.yaml:4: rules[0].severity: Input should be 'success', 'info', 'warning' or 'error'" in message


def test_missing_rules_and_missing_examples(write_config):
    assert "config.yaml:1: rules: required field is missing" in error_of(write_config, "version: 1\n")
    message = error_of(write_config, "rules:\n  - name: a\n    severity: info\n    pattern: x\n")
    assert "config.yaml:2: rules[0].examples: required field is missing" in message


def test_label_that_is_not_a_capture(write_config):
    message = error_of(write_config, MINIMAL_CONFIG + "    labels:\n      id: [a]\n")
    assert (
        "config.yaml:11: rules[2]: label 'id' is not a named capture of the pattern (captures: analysis_id)" in message
    )


def test_label_without_listed_values_is_refused(write_config):
    message = error_of(write_config, MINIMAL_CONFIG + "    labels:\n      analysis_id: []\n")
    assert "rules[2].labels: label 'analysis_id' lists no values" in message
    assert "must not become a label" in message


def test_reserved_label_name(write_config):
    text = MINIMAL_CONFIG.replace("(?P<analysis_id>", "(?P<severity>") + "    labels:\n      severity: [x]\n"
    assert "exporter uses that label name itself" in error_of(write_config, text)


def test_duplicate_rule_names(write_config):
    message = error_of(write_config, MINIMAL_CONFIG.replace("name: returned_none", "name: timeout"))
    assert "rules: rule name 'timeout' is used twice" in message


def test_not_yaml(write_config):
    message = error_of(write_config, "rules: [\n  - oops: {\n")
    assert "config.yaml:2: not valid YAML" in message


def test_yaml_errors_read_as_pyyaml_words_them(write_config):
    # libyaml parses the config; a file it rejects is parsed again by PyYAML, whose messages say more.
    message = error_of(write_config, "rules: [a, b\n")
    assert "config.yaml:2: not valid YAML: expected ',' or ']', but got '<stream end>'" in message


def test_libyaml_and_pyyaml_give_the_same_lines():
    import yaml

    from monitor.config import _line_marks

    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    assert _line_marks(yaml.compose(text, Loader=yaml.CSafeLoader)) == _line_marks(yaml.compose(text))
    assert yaml.load(text, Loader=yaml.CSafeLoader) == yaml.safe_load(text)


def test_not_a_mapping(write_config):
    assert "the config must be a mapping" in error_of(write_config, "- just\n- a list\n")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file; pass --config FILE"):
        load_config(tmp_path / "absent.yaml")


def test_bad_timezone_and_listen(write_config):
    message = error_of(
        write_config, MINIMAL_CONFIG + "timestamp:\n  timezone: Mars/Olympus\nmetrics:\n  listen: nowhere\n"
    )
    assert "timestamp.timezone: unknown time zone 'Mars/Olympus'" in message
    assert "metrics.listen: 'nowhere' is not HOST:PORT" in message


def test_parse_listen():
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:80") == ("::1", 80)
    assert parse_listen(":9464") == ("0.0.0.0", 9464)


# --- through the command a user runs: each bad config exits 2 before anything starts ---------

BAD_CONFIGS = {
    "unknown key": (MINIMAL_CONFIG + "extra: 1\n", "config.yaml:15: extra: unknown key 'extra'"),
    "wrong type": (
        MINIMAL_CONFIG.replace("examples: ['x | MongoDB操作超时']", "examples: 3"),
        "config.yaml:6: rules[0].examples: Input should be a valid list",
    ),
    "pattern does not compile": (
        MINIMAL_CONFIG.replace("'MongoDB操作超时'", "'(MongoDB'"),
        "config.yaml:5: rules[0].pattern: does not compile: missing ): (MongoDB",
    ),
    "backreference": (
        MINIMAL_CONFIG.replace("'MongoDB操作超时'", "'(a)\\1'"),
        "config.yaml:5: rules[0].pattern: does not compile",
    ),
    "matches everything": (
        MINIMAL_CONFIG.replace("'MongoDB操作超时'", "'.*'"),
        "config.yaml:5: rules[0].pattern: matches the empty string",
    ),
    "label not allowed": (
        MINIMAL_CONFIG + "    labels:\n      analysis_id: []\n",
        "config.yaml:15: rules[2].labels: label 'analysis_id' lists no values",
    ),
    "example does not match": (
        MINIMAL_CONFIG.replace("examples: ['x | MongoDB操作超时']", "examples: ['MongoDB操作失败']"),
        "config.yaml:6: rules[0].examples[0]: rule 'timeout' does not match its own example",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_check_config_exits_2_with_one_clear_message(case, tmp_path):
    text, expected = BAD_CONFIGS[case]
    (tmp_path / "config.yaml").write_text(text, encoding="utf-8")
    result = run_monitor("check-config", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# --- fuzzing: any input gives a ConfigError with a location, never a traceback ---------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from monitor.scan.matcher import compile_matcher  # noqa: E402

KEYS = [
    "version",
    "rules",
    "name",
    "severity",
    "pattern",
    "examples",
    "labels",
    "metrics",
    "prefix",
    "listen",
    "scan",
    "max_line_bytes",
    "sources",
    "paths",
    "follow",
    "start_at",
    "reconcile",
    "claims",
    "rule",
    "accept",
    "when",
    "mongodb",
    "url",
    "timestamp",
    "timezone",
    "regex",
    "state",
    "directory",
    "x",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**7),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["error", "(a+)+$", "a*", "(", "${NOPE}", "[", "✅ 分析"]),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
    max_leaves=25,
)


def assert_loads_or_explains(path, where: str = "") -> None:
    """The only acceptable failure: a ConfigError that names the file (and `where`, if given)."""
    try:
        loaded = load_config(path, environ={})
        compile_matcher(loaded.config.rules, loaded.config.timestamp, loaded.where)
    except ConfigError as exc:
        assert str(exc).startswith(str(path)) and where in str(exc), str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=documents)
def test_any_yaml_document_is_accepted_or_explained(document, tmp_path):
    import yaml

    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    assert_loads_or_explains(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300))
def test_any_bytes_are_accepted_or_explained(raw, tmp_path):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(raw)
    assert_loads_or_explains(path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=st.text(max_size=20))
def test_any_pattern_is_accepted_or_explained(pattern, tmp_path):
    path = tmp_path / "fuzz.yaml"
    import yaml

    path.write_text(
        yaml.safe_dump({"rules": [{"name": "r", "severity": "info", "pattern": pattern, "examples": ["x"]}]}),
        encoding="utf-8",
    )
    assert_loads_or_explains(path, "rules")


def test_a_rule_anchored_at_the_message_needs_to_know_where_the_message_starts(write_config):
    anchored = MINIMAL_CONFIG.replace(
        "    pattern: 'MongoDB操作超时'\n", "    anchor: message\n    pattern: 'MongoDB操作超时'\n"
    )
    message = error_of(write_config, anchored)
    assert "rule 'timeout' has anchor: message, but message.prefix is not set" in message
    for prefix, said in (
        ("'\\d{4} \\| '", "config.yaml:17: message.prefix: must start with ^"),
        ("'^(?P<t>\\S+) '", "must not have named captures"),
        ("'^(unclosed'", "does not compile as RE2"),
    ):
        assert said in error_of(write_config, anchored + f"message:\n  prefix: {prefix}\n")
    config = load_config(write_config(anchored + "message:\n  prefix: '^\\S+ \\| '\n"), environ={}).config
    assert config.rules[0].match_pattern == "(?:^\\S+ \\| )(?:MongoDB操作超时)"
    assert config.rules[1].match_pattern == "⚠️ MongoDB更新返回None"  # anchor: anywhere
