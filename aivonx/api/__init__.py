"""The management API (flask-smorest): one package per resource, registered in MODULES order."""

from __future__ import annotations

from flask import Flask

from aivonx.api import api_keys, auth, logs, nodes, operations, proxy_config, service, stats, users
from aivonx.api.common import ProblemSchema
from aivonx.extensions import api
from aivonx.version import __version__

MODULES = (service, auth, nodes, proxy_config, operations, stats, users, api_keys, logs)

API_SETTINGS = {
    "API_TITLE": "aivonx management API",
    "OPENAPI_VERSION": "3.0.3",
    "OPENAPI_URL_PREFIX": "/",
    "OPENAPI_JSON_PATH": "openapi.json",
    "OPENAPI_SWAGGER_UI_PATH": "/docs",
    "OPENAPI_SWAGGER_UI_URL": "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/",
    "OPENAPI_REDOC_PATH": "/redoc",
    "OPENAPI_REDOC_URL": "https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js",
}


def init_app(app: Flask) -> None:
    for key, value in API_SETTINGS.items():
        app.config.setdefault(key, value)
    app.config.setdefault("API_VERSION", __version__)
    api.ERROR_SCHEMA = ProblemSchema
    api.init_app(
        app,
        spec_kwargs={
            "info": {
                "description": "Manage the Ollama nodes behind aivonx, its settings, users and API keys. "
                "Authenticate with POST /api/account/login and send the access token as `Bearer`."
            }
        },
    )
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    for module in MODULES:
        api.register_blueprint(module.blp)
