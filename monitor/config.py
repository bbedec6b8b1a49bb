"""Configuration: the YAML file, its schema, and the one error type it raises.

Everything a user can set lives here as a frozen pydantic model. Loading does
three things in order: parse YAML (keeping line numbers), expand `${VAR}`
references in string values, validate against the schema. Any failure becomes
a `ConfigError` whose message names the file, the line, the field path and
what to do; the CLI prints it and exits 2.

Rule patterns are *not* compiled here: `monitor.scan.matcher` owns the matching
engine and reports pattern problems through `ConfigError` as well, so one
message format covers every kind of mistake.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

DEFAULT_CONFIG = "config.yaml"
_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
# Label names the exporter itself uses; a capture promoted to a label must not shadow them.
RESERVED_LABELS = frozenset({"rule", "severity", "stream", "le", "quantile", "job", "instance"})


class ConfigError(Exception):
    """A configuration problem, already phrased for the user (file:line: field: problem)."""


class Severity(StrEnum):
    success = "success"
    info = "info"
    warning = "warning"
    error = "error"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Model):
    """One keyword rule: a regular expression, its severity and example lines."""

    name: str = Field(pattern=_NAME)
    severity: Severity
    pattern: str = Field(min_length=1)
    description: str = ""
    # capture name -> the values it may take as a label, or how many distinct values to admit
    # (first come, first served); anything else is counted as "other", so a label can never
    # carry an unbounded value such as an analysis id.
    labels: dict[str, list[str] | int] = Field(default_factory=dict)
    examples: list[str] = Field(min_length=1)
    # "message": the pattern matches at the start of the line's message (after `message.prefix`), so
    # text the server copies into a message (a stock code, an error) cannot forge the rule's lines.
    anchor: Literal["anywhere", "message"] = "anywhere"
    _message_prefix: str = PrivateAttr(default="")

    @property
    def match_pattern(self) -> str:
        """The pattern as matched: `anchor: message` puts the config's message prefix before it."""
        if self.anchor == "message" and self._message_prefix:
            return f"(?:{self._message_prefix})(?:{self.pattern})"
        return self.pattern

    @field_validator("labels")
    @classmethod
    def _labels_are_bounded(cls, labels: dict[str, list[str] | int]) -> dict[str, list[str] | int]:
        for capture, values in labels.items():
            if isinstance(values, int) and not 1 <= values <= 1000:
                raise ValueError(f"label {capture!r}: admit between 1 and 1000 distinct values, not {values}")
            if capture in RESERVED_LABELS:
                raise ValueError(f"capture {capture!r} cannot be a label: the exporter uses that label name itself")
            if not re.match(_NAME, capture):
                raise ValueError(f"label {capture!r} is not a valid Prometheus label name")
            if not values:
                raise ValueError(
                    f"label {capture!r} lists no values: list the values it may take "
                    "(an open-ended capture such as an id must not become a label)"
                )
        return labels

    @model_validator(mode="after")
    def _labels_are_captures(self) -> Rule:
        captures = set(re.findall(r"\(\?P<([A-Za-z_][A-Za-z0-9_]*)>", self.pattern))
        for capture in self.labels:
            if capture not in captures:
                raise ValueError(
                    f"label {capture!r} is not a named capture of the pattern "
                    f"(captures: {', '.join(sorted(captures)) or 'none'}); add (?P<{capture}>...) or remove the label"
                )
        return self


class TimestampFormat(_Model):
    """How to read the time of a matched line; lines without it get the read time."""

    # logging's asctime at the line start, also inside Docker's json-file (`{"log":"...`) and
    # Kubernetes' CRI (`<time> stdout F ...`) wrappings.
    regex: str = r'^(?:\{"log": ?"|\S+ (?:stdout|stderr) [FP] )?(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3})'
    format: str = "%Y-%m-%d %H:%M:%S,%f"
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(zone)
        except Exception:
            raise ValueError(f"unknown time zone {zone!r}; use an IANA name such as Asia/Shanghai or UTC") from None
        return zone


class ScanSettings(_Model):
    # A line longer than this is counted as oversized; only its first bytes are matched.
    max_line_bytes: int = Field(default=1 << 20, ge=256, le=64 << 20)
    read_chunk_bytes: int = Field(default=1 << 20, ge=4096, le=64 << 20)


class MetricsSettings(_Model):
    prefix: str = Field(default="tradingagents", pattern=_NAME)
    self_prefix: str = Field(default="logmonitor", pattern=_NAME)
    # Safety net over all rules: beyond this many series, new label combinations count as "other".
    max_event_series: int = Field(default=10_000, ge=1)
    listen: str = "127.0.0.1:9464"
    web_config_file: str = ""  # TLS and basic auth, in the Prometheus exporters' format

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str) -> str:
        parse_listen(listen)
        return listen

    @model_validator(mode="after")
    def _prefixes_differ(self) -> MetricsSettings:
        if self.prefix == self.self_prefix:
            raise ValueError(
                "prefix and self_prefix must differ: the app's metrics and the sidecar's own are kept apart"
            )
        return self


class Source(_Model):
    """A named stream of log files: paths or globs read as one source (the `stream` label)."""

    name: str = Field(pattern=_NAME)
    paths: list[str] = Field(min_length=1)


class FollowConfig(_Model):
    start_at: Literal["end", "beginning"] = "end"  # first start ever, without a state file
    poll_interval_seconds: float = Field(default=1.0, gt=0, le=60)  # safety net when inotify is silent
    busy_poll_seconds: float = Field(default=0.5, gt=0, le=1)  # while lines keep coming (a scrape reads first)
    partial_line_flush_seconds: float = Field(default=5.0, gt=0)
    # A server that ignores the reopen signal may write into a rotated file for hours, quiet at night:
    # such files stay followed until deleted (compressed away) or idle this long.
    rotated_close_idle_seconds: float = Field(default=86400.0, gt=0)
    max_files_per_stream: int = Field(default=256, ge=1)  # each followed file holds a descriptor


class StateConfig(_Model):
    directory: str = "state"
    # Also saved on every scrape, at shutdown and whenever a file is opened, rotated or closed.
    checkpoint_interval_seconds: float = Field(default=5.0, gt=0)


class MessageFormat(_Model):
    """Where a line's message starts: an RE2 pattern matching everything before it (the server's
    asctime, logger, level and location fields, and any Docker or CRI wrapping), anchored with ^."""

    prefix: str = ""

    @field_validator("prefix")
    @classmethod
    def _a_plain_anchored_pattern(cls, prefix: str) -> str:
        if not prefix:
            return prefix
        if not prefix.startswith("^"):
            raise ValueError("must start with ^: the fields before the message are at the line's start")
        if re.search(r"\(\?P<", prefix):
            raise ValueError("must not have named captures (the rules' captures are the only ones)")
        import re2  # the scanner's engine: imported here, the config is read by processes that never match

        try:
            re2.compile(prefix)
        except re2.error as exc:
            raise ValueError(f"does not compile as RE2: {exc}") from None
        return prefix


class AuditConfig(_Model):
    """The self-audit: files the live path has read, read again and compared per rule and minute."""

    enabled: bool = True
    interval_seconds: float = Field(default=60.0, gt=0, le=86400)
    # Minutes of the log's own time kept per (stream, rule) in the checkpoint, and audited.
    retention_minutes: int = Field(default=180, ge=2, le=10080)
    # Re-reading costs ~12 ms of CPU per MB: at most this fast, so catching up after a start costs
    # at most ~5% of a core; in steady state it reads what the log grows by.
    max_read_bytes_per_second: int = Field(default=4 << 20, ge=64 << 10)
    max_findings_per_round: int = Field(default=10, ge=1, le=1000)


class MongoSettings(_Model):
    """Where the server's analyses live. No URL at all: the sidecar runs log-only."""

    url: str = ""  # also MONGODB_URL, or a file named by url_file / MONGODB_URL_FILE (a mounted secret)
    url_file: str = ""
    database: str = Field(default="tradingagents", min_length=1)
    collection: str = Field(default="analyses", min_length=1)
    server_selection_timeout_ms: int = Field(default=3000, ge=100)
    connect_timeout_ms: int = Field(default=3000, ge=100)
    socket_timeout_ms: int = Field(default=5000, ge=100)
    max_time_ms: int = Field(default=2000, ge=10)


class ClaimRule(_Model):
    """A rule whose events claim something about an analysis' status in MongoDB."""

    name: str = Field(pattern=_NAME)  # the `claim` label
    rule: str
    id_capture: str = "analysis_id"
    when: dict[str, str] = Field(default_factory=dict)  # capture -> required value
    accept: list[str] = Field(min_length=1)  # database statuses that satisfy the claim


class StuckSweep(_Model):
    interval_seconds: float = Field(default=60.0, gt=0)
    max_analysis_seconds: float = Field(default=1800.0, gt=0)
    window_seconds: float = Field(default=86400.0, gt=0)  # counts by status over this recent window
    enabled: bool = True  # false: this sidecar never sweeps, nor competes for the lease
    # Of many sidecars on one database, only the holder of a lease document in this collection (of
    # mongodb.database) sweeps. "" turns the lease off: every enabled sidecar sweeps (one replica
    # whose MongoDB user may only read).
    lease_collection: str = Field(default="logmonitor_leases", max_length=120, pattern=r"^[A-Za-z0-9_.-]*$")
    lease_seconds: float | None = Field(default=None, gt=0)  # renewed every interval; default 3 x interval_seconds

    @property
    def lease_duration(self) -> float:
        return self.lease_seconds if self.lease_seconds is not None else 3 * self.interval_seconds

    @model_validator(mode="after")
    def _lease_outlasts_interval(self) -> StuckSweep:
        if self.lease_seconds is not None and self.lease_seconds <= self.interval_seconds:
            raise ValueError(
                f"lease_seconds ({self.lease_seconds:g}) must be longer than interval_seconds "
                f"({self.interval_seconds:g}): the holder renews its lease every interval; "
                "use about 3 x interval_seconds, or leave it out"
            )
        return self


class ReconcileSettings(_Model):
    grace_seconds: float = Field(default=5.0, ge=0)  # first check this long after the claim
    deadline_seconds: float = Field(default=120.0, gt=0)  # re-checked until then: writes may land late
    recheck_interval_seconds: float = Field(default=10.0, gt=0)
    batch_size: int = Field(default=500, ge=1, le=10000)
    max_pending: int = Field(default=100_000, ge=1)
    findings_kept: int = Field(default=200, ge=1)
    claims: list[ClaimRule] = Field(default_factory=list)
    # Rules whose line says an analysis started (again): a repair plan never restores the status of
    # an analysis the log shows started again after its end line (the same analysis re-run).
    start_rules: list[str] = Field(default_factory=list)
    stuck: StuckSweep = StuckSweep()


class Config(_Model):
    version: Literal[1] = 1
    metrics: MetricsSettings = MetricsSettings()
    scan: ScanSettings = ScanSettings()
    timestamp: TimestampFormat = TimestampFormat()
    sources: list[Source] = Field(default_factory=list)
    follow: FollowConfig = FollowConfig()
    state: StateConfig = StateConfig()
    audit: AuditConfig = AuditConfig()
    message: MessageFormat = MessageFormat()
    mongodb: MongoSettings = MongoSettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    rules: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _claims_name_rules_and_captures(self) -> Config:
        rules = {rule.name: rule for rule in self.rules}
        for claim in self.reconcile.claims:
            rule = rules.get(claim.rule)
            if rule is None:
                raise ValueError(
                    f"reconcile claim {claim.name!r} names rule {claim.rule!r}, which is not in rules "
                    f"(rules: {', '.join(rules)})"
                )
            captures = set(re.findall(r"\(\?P<([A-Za-z_][A-Za-z0-9_]*)>", rule.pattern))
            for capture in [claim.id_capture, *claim.when]:
                if capture not in captures:
                    raise ValueError(
                        f"reconcile claim {claim.name!r}: rule {claim.rule!r} has no capture {capture!r} "
                        f"(captures: {', '.join(sorted(captures)) or 'none'})"
                    )
        _unique("reconcile claim", [c.name for c in self.reconcile.claims])
        for rule in self.rules:
            if rule.anchor == "message" and not self.message.prefix:
                raise ValueError(
                    f"rule {rule.name!r} has anchor: message, but message.prefix is not set: say where a "
                    "line's message starts (the fields before it), or use anchor: anywhere"
                )
            rule._message_prefix = self.message.prefix
        id_captures = {claim.id_capture for claim in self.reconcile.claims} or {"analysis_id"}
        for name in self.reconcile.start_rules:
            rule = rules.get(name)
            if rule is None:
                raise ValueError(f"reconcile.start_rules names rule {name!r}, which is not in rules")
            if not id_captures & set(re.findall(r"\(\?P<([A-Za-z_][A-Za-z0-9_]*)>", rule.pattern)):
                raise ValueError(
                    f"reconcile.start_rules: rule {name!r} has no capture {' or '.join(sorted(id_captures))!r} "
                    "naming the analysis"
                )
        return self

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, sources: list[Source]) -> list[Source]:
        _unique("source", [s.name for s in sources])
        return sources

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[Rule]) -> list[Rule]:
        _unique("rule", [r.name for r in rules])
        return rules


def _unique(kind: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{kind} name {name!r} is used twice; each {kind} needs its own name")
        seen.add(name)


def parse_listen(listen: str) -> tuple[str, int]:
    """Split HOST:PORT (IPv6 as [::1]:PORT); raise ValueError with a hint when malformed."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{listen!r} is not HOST:PORT, e.g. 127.0.0.1:9464 or [::]:9464")
    return host.strip("[]") or "0.0.0.0", int(port)


# ---------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config and where it came from (error messages cite the file)."""

    config: Config
    path: Path
    _marks: dict[tuple[str | int, ...], int]

    def where(self, *loc: str | int) -> str:
        """`file:line: field.path` for a location inside the config."""
        return _where(self.path, self._marks, loc)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_config(path: str | os.PathLike[str], environ: dict[str, str] | None = None) -> LoadedConfig:
    """Read, expand and validate a config file; raise ConfigError on any problem."""
    path = Path(path)
    environ = dict(os.environ) if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file; pass --config FILE or create {DEFAULT_CONFIG}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
    try:
        node, raw = _parse(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{line}: not valid YAML: {problem}; fix the syntax at that line") from None
    marks = _line_marks(node)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping with at least a 'rules' list")
    raw = _expand(raw, environ, path, marks, ())
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, marks)) from None
    return LoadedConfig(config, path, marks)


# libyaml's parser when PyYAML was built with it: config.yaml in ~2 ms instead of ~14 ms at start-up.
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse(text: str) -> tuple[yaml.Node | None, Any]:
    """The document's nodes (for line numbers) and its data. A text libyaml rejects is parsed again
    by PyYAML's own parser, whose error messages say more (`expected ',' or ']', but got '<stream end>'`
    rather than `did not find expected ',' or ']'`) and are the ones users have seen so far."""
    try:
        return yaml.compose(text, Loader=_FAST_LOADER), yaml.load(text, Loader=_FAST_LOADER)
    except yaml.YAMLError:
        return yaml.compose(text, Loader=yaml.SafeLoader), yaml.safe_load(text)


def _expand(value: Any, environ: dict[str, str], path: Path, marks: dict, loc: tuple) -> Any:
    """Replace ${VAR} and ${VAR:-default} inside string values (never in keys or structure)."""
    if isinstance(value, dict):
        return {k: _expand(v, environ, path, marks, (*loc, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, environ, path, marks, (*loc, i)) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{_where(path, marks, loc)}: environment variable {name} is not set; set it or write ${{{name}:-default}}"
        )

    return _ENV_REF.sub(substitute, value)


def _line_marks(node: yaml.Node | None) -> dict[tuple[str | int, ...], int]:
    """Map every field path of the YAML document to its 1-based line number."""
    marks: dict[tuple[str | int, ...], int] = {}

    def walk(n: yaml.Node, loc: tuple[str | int, ...]) -> None:
        marks[loc] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            for key, child in n.value:
                walk(child, (*loc, str(key.value)))
                marks[(*loc, str(key.value))] = key.start_mark.line + 1
        elif isinstance(n, yaml.SequenceNode):
            for i, child in enumerate(n.value):
                walk(child, (*loc, i))

    if node is not None:
        walk(node, ())
    return marks


def _where(path: Path, marks: dict, loc: tuple) -> str:
    line = None
    for depth in range(len(loc), -1, -1):
        line = marks.get(tuple(loc[:depth]))
        if line is not None:
            break
    field = format_loc(loc) or "(top level)"
    return f"{path}:{line}: {field}" if line else f"{path}: {field}"


def format_loc(loc: tuple[str | int, ...]) -> str:
    """('rules', 3, 'pattern') -> 'rules[3].pattern'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(exc: ValidationError, path: Path, marks: dict) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}; check its spelling or remove it"
        elif err["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"{_where(path, marks, loc)}: {msg}")
    return "\n".join(lines)
