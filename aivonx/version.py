"""aivonx's own version (`/api/version` reports the nodes' Ollama version instead)."""

__version__ = "0.1.0"
