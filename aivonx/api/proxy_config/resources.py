"""The live proxy settings. A change is stored with a version bump (other processes
reload within their sync interval) and applied to this process at once."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from aivonx import store
from aivonx.api.common import ADMIN, authorized
from aivonx.api.proxy_config.schemas import ProxyConfigPatchSchema, ProxyConfigReplaceSchema, ProxyConfigSchema
from aivonx.models import ProxyConfig
from aivonx.runtime import get_runtime

blp = Blueprint("config", __name__, url_prefix="/api/proxy/config", description="Live proxy settings")


def changed(fields: dict[str, Any]) -> ProxyConfig:
    config = store.update_config(**fields)
    get_runtime(current_app).sync(force=True)
    return config


@blp.route("")
class Config(MethodView):
    @authorized(blp)
    @blp.response(200, ProxyConfigSchema)
    def get(self) -> ProxyConfig:
        """The settings in force."""
        return store.get_config()

    @authorized(blp, ADMIN)
    @blp.arguments(ProxyConfigReplaceSchema)
    @blp.response(200, ProxyConfigSchema)
    def put(self, fields: dict[str, Any]) -> ProxyConfig:
        """Replace every setting; applied live."""
        return changed(fields)

    @authorized(blp, ADMIN)
    @blp.arguments(ProxyConfigPatchSchema)
    @blp.response(200, ProxyConfigSchema)
    def patch(self, fields: dict[str, Any]) -> ProxyConfig:
        """Change some settings; applied live."""
        return changed(fields)
