"""A one-command demo: a simulated TradingAgents server losing status writes, and the sidecar catching it."""
