"""Database models (SQLAlchemy 2 typed). Migrations in migrations/ create their tables."""

from aivonx.models.node import Node
from aivonx.models.proxy_config import ProxyConfig
from aivonx.models.user import ROLES, ApiKey, User

__all__ = ["ROLES", "ApiKey", "Node", "ProxyConfig", "User"]
