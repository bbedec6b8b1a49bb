"""Export: the counters and gauges the sidecar exports, and the HTTP endpoint that serves them.

Export knows names and labels, not files or MongoDB. Its parts:

- `metrics`: the rules' event counters and the sidecar's own counters (`LogMetrics`);
- `histogram`: a histogram as plain, checkpointable data;
- `server`: /metrics, /healthz, /readyz and the JSON pages, over HTTP or HTTPS;
- `webconfig`: TLS and basic auth, in the Prometheus exporter-toolkit's format.
"""
