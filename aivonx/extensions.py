"""Extensions, created unbound; `create_app` binds them with `init_app`."""

from __future__ import annotations

from flask import Flask, current_app
from flask_jwt_extended import JWTManager
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


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
    details by route), so the Api's own HTTPException handler is not registered.
    """

    def _register_error_handlers(self) -> None:
        pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
redis_store = RedisExtension()
api = ManagementApi()
jwt = JWTManager()
