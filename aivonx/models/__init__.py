"""Database models (SQLAlchemy 2 typed). Migrations in migrations/ create their tables."""

from aivonx.models.node import Node
from aivonx.models.proxy_config import ProxyConfig

__all__ = ["Node", "ProxyConfig"]
