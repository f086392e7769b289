"""Model names as Ollama compares them: `llama3` is `llama3:latest`, case does not matter."""

from __future__ import annotations


def normalize_model(name: str) -> str:
    name = name.strip().lower()
    if not name:
        return name
    # A registry host may carry a port (`host:5000/ns/model`): only the last path part has a tag.
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        name += ":latest"
    return name
