"""Active health checks: probe a node (probe.py) and decide who is due (checks.py)."""
