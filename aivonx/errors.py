"""One error handler for the whole app, answering in the shape the caller expects:
Ollama's `{"error": ...}` on Ollama routes, OpenAI's error object on /v1, problem
details (RFC 9457) on the management API, and an HTML page on the admin pages (/ui/)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, InternalServerError

from aivonx.extensions import db
from aivonx.proxy.errors import ProxyError

log = logging.getLogger(__name__)

PROXY_BLUEPRINT = "ollama"
PAGES_BLUEPRINT = "admin"
PAGES_PREFIX = "/ui"
OPENAI_TYPES = {401: "authentication_error", 429: "rate_limit_error"}
# Management paths answer problem details even when no route matched (404/405).
MANAGEMENT_PREFIXES = ("/api/proxy/", "/api/account/", "/api/users", "/api/keys", "/api/health", "/api/ready")
WEBARGS_LOCATIONS = {"json", "query", "path", "headers", "form", "files", "view_args", "querystring"}


def _caller_shape() -> str:
    """`openai`, `ollama`, `problem` or `html`: by blueprint, or by path for unmatched routes."""
    path = request.path
    if request.blueprint == PAGES_BLUEPRINT or path == PAGES_PREFIX or path.startswith(PAGES_PREFIX + "/"):
        return "html"
    if request.blueprint is None and path.startswith(MANAGEMENT_PREFIXES):
        return "problem"
    if request.blueprint == PROXY_BLUEPRINT or request.blueprint is None:
        if path.startswith("/v1/"):
            return "openai"
        if request.blueprint == PROXY_BLUEPRINT or path == "/" or path.startswith("/api/"):
            return "ollama"
    return "problem"


def problem(status: int, detail: str, *, title: str | None = None, errors: Any = None) -> Response:
    """A problem-details response (application/problem+json)."""
    body: dict[str, Any] = {"type": "about:blank", "title": title or detail, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response


def error_response(
    status: int, message: str, *, openai_type: str | None = None, title: str | None = None, errors: Any = None
) -> Response:
    shape = _caller_shape()
    if shape == "html":
        page = render_template("admin/error.html", status=status, title=title or "", message=message)
        return Response(page, status=status, mimetype="text/html")
    if shape == "problem":
        return problem(status, message, title=title, errors=errors)
    if shape == "openai":
        fallback = "server_error" if status >= 500 else "invalid_request_error"
        error_type = openai_type or OPENAI_TYPES.get(status, fallback)
        response = jsonify({"error": {"message": message, "type": error_type, "param": None, "code": None}})
    else:
        response = jsonify({"error": message})
    response.status_code = status
    return response


def handle_proxy_error(error: ProxyError) -> Response:
    response = error_response(error.status, error.message, openai_type=error.openai_type)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def handle_http_exception(error: HTTPException) -> Response:
    # webargs (flask-smorest) and flask_smorest.abort put details in `data`.
    data = getattr(error, "data", None) or {}
    errors = data.get("errors") or data.get("messages")
    if isinstance(errors, dict) and set(errors) <= WEBARGS_LOCATIONS:
        errors = _by_field(errors)
    if "message" in data:
        message = data["message"]
    elif error.code == 413:
        message = "request body too large"
    elif error.code == 404:
        message = "404 page not found"
    elif error.code == 405:
        message = f"method {request.method} not allowed on {request.path}"
    elif error.code == 422 and isinstance(errors, dict):
        message = "invalid request: " + "; ".join(f"{field}: {_flatten(msgs)}" for field, msgs in errors.items())
    else:
        message = error.description or error.name
    response = error_response(error.code or 500, message, title=error.name, errors=errors)
    if error.code == 405 and error.valid_methods:
        response.headers["Allow"] = ", ".join(error.valid_methods)
    for name, value in (data.get("headers") or {}).items():
        response.headers[name] = value
    return response


def _by_field(by_location: dict[str, Any]) -> dict[str, Any]:
    """webargs groups messages by location; callers care about fields (`body` for the whole body)."""
    fields: dict[str, Any] = {}
    for location, messages in by_location.items():
        if isinstance(messages, dict):
            fields.update(messages)
        else:
            fields["body" if location == "json" else location] = messages
    return fields


def _flatten(messages: Any) -> str:
    if isinstance(messages, list):
        return " ".join(_flatten(m) for m in messages)
    if isinstance(messages, dict):
        return "; ".join(f"{key}: {_flatten(value)}" for key, value in messages.items())
    return str(messages)


def handle_unexpected(error: Exception) -> Response:
    # The detail goes to the log, never to the client.
    log.exception("unhandled error on %s %s", request.method, request.path)
    db.session.rollback()
    return error_response(500, InternalServerError.description, title="Internal Server Error")


def _raised_by_json_decoder(error: BaseException) -> bool:
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(("json/decoder.py", "json/__init__.py")):
            return True
        tb = tb.tb_next
    return False


def handle_recursion_error(error: RecursionError) -> Response:
    # JSON nested deeper than the interpreter's recursion limit makes json.loads raise
    # RecursionError, not ValueError, wherever a body is parsed (proxy routes, webargs):
    # a client error, answered as any invalid JSON is.
    if not _raised_by_json_decoder(error):
        return handle_unexpected(error)
    return error_response(400, "invalid JSON body: nested too deeply", title="Bad Request")


DATABASE_RETRY_AFTER = 5


def database_unavailable(error: SQLAlchemyError) -> bool:
    """Refused, dropped or timed-out connections (and a full pool): an outage, not a bug."""
    if isinstance(error, (OperationalError, InterfaceError, PoolTimeout)):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


def handle_database_error(error: SQLAlchemyError) -> Response:
    # While the database is down, management reads and writes answer 503 with Retry-After
    # (a load balancer or client retries); proxying goes on from the cached configuration.
    if not database_unavailable(error):
        return handle_unexpected(error)
    log.warning("database unavailable on %s %s: %s", request.method, request.path, error)
    with contextlib.suppress(SQLAlchemyError):
        db.session.rollback()
    response = error_response(
        503, "database unavailable, try again shortly", title="Service Unavailable", openai_type="server_error"
    )
    response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER)
    return response


def register_errorhandlers(app: Flask) -> None:
    app.register_error_handler(ProxyError, handle_proxy_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(SQLAlchemyError, handle_database_error)
    app.register_error_handler(RecursionError, handle_recursion_error)
    app.register_error_handler(Exception, handle_unexpected)
