"""One error handler for the whole app, answering in the shape the route's clients expect:
Ollama's `{"error": ...}`, OpenAI's error object on /v1, problem details elsewhere."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, InternalServerError

from aivonx.extensions import db
from aivonx.proxy.errors import ProxyError

log = logging.getLogger(__name__)

OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
                413: "invalid_request_error", 429: "rate_limit_error"}  # fmt: skip


def error_response(status: int, message: str, *, openai_type: str | None = None, title: str | None = None) -> Response:
    path = request.path
    if path.startswith("/v1/"):
        fallback = "server_error" if status >= 500 else "invalid_request_error"
        error_type = openai_type or OPENAI_TYPES.get(status, fallback)
        body = {"error": {"message": message, "type": error_type, "param": None, "code": None}}
        response = jsonify(body)
    elif path == "/" or (path.startswith("/api/") and not path.startswith("/api/proxy/")):
        response = jsonify({"error": message})
    else:
        response = jsonify({"type": "about:blank", "title": title or message, "status": status, "detail": message})
        response.mimetype = "application/problem+json"
    response.status_code = status
    return response


def handle_proxy_error(error: ProxyError) -> Response:
    response = error_response(error.status, error.message, openai_type=error.openai_type)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def handle_http_exception(error: HTTPException) -> Response:
    if error.code == 413:
        message = "request body too large"
    elif error.code == 404:
        message = "404 page not found"
    elif error.code == 405:
        message = f"method {request.method} not allowed on {request.path}"
    else:
        message = error.description or error.name
    response = error_response(error.code or 500, message, title=error.name)
    if error.code == 405 and error.valid_methods:
        response.headers["Allow"] = ", ".join(error.valid_methods)
    return response


def handle_unexpected(error: Exception) -> Response:
    # The detail goes to the log, never to the client.
    log.exception("unhandled error on %s %s", request.method, request.path)
    db.session.rollback()
    return error_response(500, InternalServerError.description, title="Internal Server Error")


def register_errorhandlers(app: Flask) -> None:
    app.register_error_handler(ProxyError, handle_proxy_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
