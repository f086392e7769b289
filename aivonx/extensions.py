"""Extensions, created unbound; `create_app` binds them with `init_app`."""

from __future__ import annotations

import http
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app
from flask_jwt_extended import JWTManager
from flask_migrate import Migrate
from flask_smorest import Api
from flask_smorest.utils import prepare_response
from flask_sqlalchemy import SQLAlchemy
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy.orm import DeclarativeBase

from config.settings import DATABASE_CONNECT_TIMEOUT


class Base(DeclarativeBase):
    pass


def _connect_within_timeout(dialect: Any, conn_rec: Any, cargs: Any, cparams: Any) -> Any:
    """libpq enforces `connect_timeout` (config: DATABASE_CONNECT_TIMEOUT) only on a blocking
    connect; psycopg2 made cooperative under gevent (wsgi.py) polls instead and would wait
    forever, so a gevent timeout bounds it. None: connect as usual."""
    if dialect.name != "postgresql":
        return None
    try:
        from gevent import Timeout
        from gevent.monkey import is_module_patched
    except ImportError:
        return None
    if not is_module_patched("socket"):
        return None  # no gevent: connect_timeout applies
    timeout = Timeout(DATABASE_CONNECT_TIMEOUT)
    timeout.start()
    try:
        return dialect.connect(*cargs, **cparams)
    except Timeout as exc:
        if exc is not timeout:
            raise
        raise dialect.loaded_dbapi.OperationalError(f"connection timed out after {DATABASE_CONNECT_TIMEOUT}s") from None
    finally:
        timeout.close()


def bound_database_connects() -> None:
    """Every engine's connects go through `_connect_within_timeout` (registered once)."""
    if not sa.event.contains(sa.engine.Engine, "do_connect", _connect_within_timeout):
        sa.event.listen(sa.engine.Engine, "do_connect", _connect_within_timeout)


def connect_redis(url: str) -> Redis:
    # Short timeouts and one immediate retry (a connection dropped by a Redis restart):
    # Redis being slow or gone must degrade the proxy, not stall every request.
    return Redis.from_url(
        url, socket_connect_timeout=1, socket_timeout=2, health_check_interval=30, retry=Retry(NoBackoff(), 1)
    )


class RedisExtension:
    """A Redis client per app, or None when `AIVONX_REDIS_URL` is unset (in-memory mode)."""

    def init_app(self, app: Flask) -> None:
        url = app.config["AIVONX_REDIS_URL"]
        client = None
        if url:
            client = connect_redis(url)
        app.extensions["aivonx.redis"] = client

    @property
    def client(self) -> Redis | None:
        return current_app.extensions["aivonx.redis"]


class ManagementApi(Api):
    """flask-smorest's Api, documenting errors as problem details.

    Errors are answered by aivonx.errors for the whole app (Ollama, OpenAI or problem
    details by route), so the Api's own HTTPException handler is not registered, and the
    error responses it documents carry application/problem+json.
    """

    PROBLEM_CONTENT_TYPE = "application/problem+json"

    def _register_error_handlers(self) -> None:
        pass

    def _register_responses(self) -> None:
        for status in http.HTTPStatus:
            response: dict = {"description": status.phrase}
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
            content_type = self.PROBLEM_CONTENT_TYPE if status >= 400 else self.DEFAULT_RESPONSE_CONTENT_TYPE
            prepare_response(response, self.spec, content_type)
            self.spec.components.response(status.name, response, lazy=True)
        default = {"description": "Default error response", "schema": self.ERROR_SCHEMA}
        prepare_response(default, self.spec, self.PROBLEM_CONTENT_TYPE)
        self.spec.components.response("DEFAULT_ERROR", default, lazy=True)


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
redis_store = RedisExtension()
api = ManagementApi()
jwt = JWTManager()
