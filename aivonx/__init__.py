"""aivonx: a high-availability proxy for Ollama."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from aivonx import admin, api, commands, errors, logs, metrics, runtime, security, stats
from aivonx.extensions import bound_database_connects, db, migrate, redis_store
from aivonx.proxy.views import bp as ollama_bp
from aivonx.version import __version__
from config import build_settings

__all__ = ["__version__", "create_app"]

MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app. `config` overrides settings (tests); otherwise AIVONX_* variables rule."""
    app = Flask(__name__, instance_relative_config=True, static_folder=None)
    app.config.from_mapping(build_settings(config, instance_path=app.instance_path))
    os.makedirs(app.instance_path, exist_ok=True)

    register_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_commands(app)
    return app


def register_extensions(app: Flask) -> None:
    logs.init_app(app)
    db.init_app(app)
    bound_database_connects()
    migrate.init_app(app, db, directory=MIGRATIONS_DIR)
    redis_store.init_app(app)
    security.init_app(app)
    runtime.init_app(app)
    metrics.init_app(app)  # subscribes to the runtime's events
    stats.init_app(app)  # dashboard statistics, also from the runtime's events


def register_blueprints(app: Flask) -> None:
    app.register_blueprint(ollama_bp)
    app.register_blueprint(metrics.bp)
    api.init_app(app)
    admin.init_app(app)  # pages under /ui/


def register_errorhandlers(app: Flask) -> None:
    errors.register_errorhandlers(app)


def register_commands(app: Flask) -> None:
    commands.register_commands(app)
