# The log-monitoring sidecar: `monitor run` with /metrics, /healthz and /readyz on :9464.
#
#   docker build -t tradingagents-logmonitor:0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
#     --build-arg SOURCE=<the repository's URL> .
#   docker run --read-only \
#     -v "$PWD/config.yaml:/etc/logmonitor/config.yaml:ro" \
#     -v app-logs:/app/logs:ro -v logmonitor-state:/var/lib/logmonitor \
#     -p 9464:9464 tradingagents-logmonitor:0.1.0
#
# Only the runtime package is installed: never the [test] extra (secantusdb, a GPL
# test-only MongoDB server, must not ship in the image).
#
# Nothing is pulled by a name that can move: the base image by digest, every Python package
# by version and sha256 (requirements.lock), the build backend from the pinned base image.
# No `# syntax=` line either: the builder's own Dockerfile frontend, no frontend image pulled.

# python:3.11-slim, by digest (the multi-platform index: amd64, arm64, ...), as published on
# 2026-08-05 (Python 3.11.15, Debian trixie). To move it: `docker buildx imagetools inspect
# python:3.11-slim` prints the tag's current `Digest:`; put it here, rebuild, run the tests.
ARG PYTHON_IMAGE=python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff
# The image's version (its org.opencontainers.image.version label): pyproject.toml's version,
# which the builder checks against the wheel it builds.
ARG VERSION=0.1.0

# --- builder: a virtualenv with the locked runtime dependencies, then the project's wheel ----------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The dependencies first, from the lock alone: this layer is rebuilt only when the lock changes.
# --require-hashes: every package, transitive ones included, must be in the lock with a
# matching hash, or the build fails. --only-binary: wheels only, nothing compiled here.
# tzdata (zoneinfo's data for the log's time zone, Asia/Shanghai, whatever the base image
# has) is one of them: installed here and nowhere else.
COPY requirements.lock ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --only-binary=:all: -r requirements.lock

COPY pyproject.toml README.md config.yaml ./
COPY monitor ./monitor
# The wheel is built with the base image's setuptools (pinned with it: no unpinned download),
# must carry VERSION (the image's version label), and is installed without dependencies:
# `pip check` proves the lock had them all. The last step is a smoke test: the venv imports
# everything and accepts the shipped config.
ARG VERSION
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && test -f "/wheels/tradingagents_logmonitor-${VERSION}-py3-none-any.whl" \
 && /opt/venv/bin/pip install --no-deps --no-index "/wheels/tradingagents_logmonitor-${VERSION}-py3-none-any.whl" \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/pip uninstall --yes pip setuptools \
 && /opt/venv/bin/python -m compileall -q /opt/venv \
 && /opt/venv/bin/monitor check-config config.yaml >/dev/null

# --- final: the virtualenv on a clean slim image, no compiler, no pip cache, not root --------
FROM ${PYTHON_IMAGE}
ARG UID=10001
ARG GID=10001

# The base image deletes the standard library's bytecode, and the sidecar cannot write any
# (PYTHONDONTWRITEBYTECODE, read-only root): without this, every start compiles the ~160
# standard modules it imports, ~0.23 s of CPU (~0.4 s on a busy node). ~15 MB of .pyc.
RUN python -m compileall -q -j 0 -x '/site-packages/' "$(python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"

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

# OCI labels last: CREATED and REVISION change on every build and would otherwise void the
# cache of every layer after them. REVISION (the commit), SOURCE (the repository's URL) and
# CREATED (RFC 3339) are empty unless given with --build-arg.
ARG VERSION
ARG REVISION=
ARG SOURCE=
ARG CREATED=
LABEL org.opencontainers.image.title="tradingagents-logmonitor" \
      org.opencontainers.image.description="Log-monitoring sidecar for TradingAgents analysis servers" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.created="${CREATED}"
