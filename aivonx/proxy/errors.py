"""Failures of the data path, each with the HTTP status Ollama would use.

Views turn them into Ollama's `{"error": ...}` or OpenAI's error object by route.
"""

from __future__ import annotations


class ProxyError(Exception):
    status = 500
    openai_type = "api_error"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class BadRequest(ProxyError):
    status = 400
    openai_type = "invalid_request_error"


class ModelNotFound(ProxyError):
    status = 404
    openai_type = "invalid_request_error"

    def __init__(self, model: str) -> None:
        super().__init__(f"model '{model}' not found")
        self.model = model


class NoHealthyNode(ProxyError):
    """Nodes have the model but none of them can take the request now."""

    status = 503
    openai_type = "server_error"


class UpstreamFailed(ProxyError):
    """Every node tried failed before sending anything."""

    status = 502
    openai_type = "server_error"


class Unauthorized(ProxyError):
    """A proxy route needs an API key and the request has no valid one."""

    status = 401
    openai_type = "authentication_error"
