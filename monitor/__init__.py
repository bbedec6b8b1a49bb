"""TradingAgents log monitor: a sidecar that counts what the server's log says and checks it in MongoDB."""

__version__ = "0.1.0"  # kept equal to pyproject.toml's by a test
