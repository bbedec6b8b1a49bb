# syntax=docker/dockerfile:1
# The log-monitoring sidecar: `monitor run` with /metrics, /healthz and /readyz on :9464.
#
#   docker build -t tradingagents-logmonitor:0.1.0 .
#   docker run --read-only \
#     -v "$PWD/config.yaml:/etc/logmonitor/config.yaml:ro" \
#     -v app-logs:/app/logs:ro -v logmonitor-state:/var/lib/logmonitor \
#     -p 9464:9464 tradingagents-logmonitor:0.1.0
#
# Only the runtime package is installed: never the [test] extra (secantusdb, a GPL
# test-only MongoDB server, must not ship in the image).

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: the wheel, and a virtualenv with it and its runtime dependencies ---------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md config.yaml ./
COPY monitor ./monitor
# tzdata: zoneinfo's data for the log's time zone (Asia/Shanghai), whatever the base image has.
# The last step is a smoke test: the venv imports everything and accepts the shipped config.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install /wheels/tradingagents_logmonitor-*.whl tzdata \
 && /opt/venv/bin/pip uninstall --yes pip setuptools \
 && /opt/venv/bin/python -m compileall -q /opt/venv \
 && /opt/venv/bin/monitor check-config config.yaml >/dev/null

# --- final: the virtualenv on a clean slim image, no compiler, no pip cache, not root --------
FROM ${PYTHON_IMAGE}
ARG UID=10001
ARG GID=10001
LABEL org.opencontainers.image.title="tradingagents-logmonitor" \
      org.opencontainers.image.description="Log-monitoring sidecar for TradingAgents analysis servers" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid "${GID}" logmonitor \
 && useradd --system --uid "${UID}" --gid "${GID}" --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin logmonitor \
 && mkdir -p /etc/logmonitor /app/logs /var/lib/logmonitor \
 && chown "${UID}:${GID}" /var/lib/logmonitor \
 && chmod 0750 /var/lib/logmonitor

COPY --from=builder /opt/venv /opt/venv
# The default profile; mount your own over it (read-only).
COPY config.yaml /etc/logmonitor/config.yaml

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MONITOR_LISTEN=0.0.0.0:9464 \
    MONITOR_STATE_DIR=/var/lib/logmonitor \
    TRADINGAGENTS_LOG_DIR=/app/logs

# The only place the sidecar writes: its checkpoint. Everything else may be read-only
# (docker run --read-only, Kubernetes readOnlyRootFilesystem); mount the logs read-only.
VOLUME ["/var/lib/logmonitor"]
USER 10001:10001
WORKDIR /var/lib/logmonitor
EXPOSE 9464

# No curl in slim images: ask /healthz with the standard library (503 or no answer fails).
# /healthz needs no credentials; with TLS on (metrics.web_config_file / --web-config), use
# https:// and an unverified ssl context here.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('MONITOR_LISTEN', '0.0.0.0:9464').rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]

ENTRYPOINT ["monitor"]
CMD ["run", "--config", "/etc/logmonitor/config.yaml"]
