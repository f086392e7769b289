"""Database side of nodes and settings: the only place that turns rows into runtime records.

Every change here bumps `ProxyConfig.version`, which is how other processes notice it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from aivonx.extensions import db
from aivonx.models import Node, ProxyConfig
from aivonx.proxy.types import NodeSpec, ProxySettings

CONFIG_ID = 1


class NodeInputError(ValueError):
    """A node's fields are invalid; `field` names the offending one."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def normalize_base_url(url: str) -> str:
    """`http(s)://host[:port][/prefix]` without a trailing slash, query or fragment."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise NodeInputError("base_url", f"{url!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NodeInputError("base_url", f"{url!r} must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise NodeInputError("base_url", f"{url!r} must not carry credentials, a query or a fragment")
    netloc = parts.hostname if port is None else f"{parts.hostname}:{port}"
    if ":" in parts.hostname:  # IPv6 literal
        netloc = f"[{parts.hostname}]" + ("" if port is None else f":{port}")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def default_node_name(base_url: str) -> str:
    parts = urlsplit(base_url)
    return parts.netloc + parts.path


def config_defaults(app_config: Mapping[str, Any]) -> dict[str, Any]:
    """The first ProxyConfig row takes its values from the AIVONX_* settings."""
    return {
        "strategy": app_config["AIVONX_STRATEGY"],
        "health_interval": app_config["AIVONX_HEALTH_INTERVAL"],
        "standby_interval": app_config["AIVONX_STANDBY_INTERVAL"],
        "probe_timeout": app_config["AIVONX_PROBE_TIMEOUT"],
        "connect_timeout": app_config["AIVONX_CONNECT_TIMEOUT"],
        "first_byte_timeout": app_config["AIVONX_FIRST_BYTE_TIMEOUT"],
        "max_tries": app_config["AIVONX_MAX_TRIES"],
        "models_max_age": app_config["AIVONX_MODELS_MAX_AGE"],
        "forward_authorization": app_config["AIVONX_FORWARD_AUTHORIZATION"],
        "require_api_key": app_config["AIVONX_REQUIRE_API_KEY"],
    }


def ensure_config(app_config: Mapping[str, Any], *, commit: bool = True) -> ProxyConfig:
    config = db.session.get(ProxyConfig, CONFIG_ID)
    if config is None:
        config = ProxyConfig(id=CONFIG_ID, version=1, **config_defaults(app_config))
        db.session.add(config)
        if not commit:
            db.session.flush()
            return config
        try:
            db.session.commit()
        except IntegrityError:  # another process created it first
            db.session.rollback()
            config = db.session.get(ProxyConfig, CONFIG_ID)
    return config


def bump_version() -> None:
    """Mark a change for every process; call inside the transaction making the change."""
    ensure_config(current_app.config, commit=False)
    db.session.execute(update(ProxyConfig).where(ProxyConfig.id == CONFIG_ID).values(version=ProxyConfig.version + 1))


def current_version() -> int | None:
    return db.session.scalar(select(ProxyConfig.version).where(ProxyConfig.id == CONFIG_ID))


def snapshot(app_config: Mapping[str, Any]) -> tuple[ProxySettings, list[NodeSpec]]:
    """Settings and nodes as runtime records; the session is closed before returning."""
    try:
        config = db.session.get(ProxyConfig, CONFIG_ID)
        values = (
            config_defaults(app_config)
            if config is None
            else {key: getattr(config, key) for key in config_defaults(app_config)}
        )
        settings = ProxySettings(**values, version=config.version if config else 0)
        nodes = [
            NodeSpec(
                id=node.id,
                name=node.name,
                base_url=node.base_url,
                enabled=node.enabled,
                priority=node.priority,
                weight=node.weight,
                max_concurrent=node.max_concurrent,
            )
            for node in db.session.scalars(select(Node).order_by(Node.id))
        ]
    finally:
        db.session.remove()
    return settings, nodes


def add_node(base_url: str, name: str | None = None, **fields: Any) -> Node:
    base_url = normalize_base_url(base_url)
    name = (name or default_node_name(base_url)).strip()
    if not name:
        raise NodeInputError("name", "name must not be empty")
    if db.session.scalar(select(Node.id).where(Node.name == name)) is not None:
        raise NodeInputError("name", f"a node named {name!r} exists already")
    if db.session.scalar(select(Node.id).where(Node.base_url == base_url)) is not None:
        raise NodeInputError("base_url", f"a node with base_url {base_url!r} exists already")
    node = Node(name=name, base_url=base_url, **fields)
    db.session.add(node)
    bump_version()
    db.session.commit()
    return node


def seed_nodes(urls: Iterable[str]) -> list[Node]:
    """Add the nodes whose URL is not registered yet (idempotent)."""
    added = []
    for url in urls:
        base_url = normalize_base_url(url)
        if db.session.scalar(select(Node.id).where(Node.base_url == base_url)) is None:
            try:
                added.append(add_node(base_url))
            except IntegrityError:  # a concurrent start added it
                db.session.rollback()
    return added


def find_node(ref: str) -> Node | None:
    """A node by id, name or base URL."""
    if ref.isdigit():
        node = db.session.get(Node, int(ref))
        if node is not None:
            return node
    node = db.session.scalar(select(Node).where(Node.name == ref))
    if node is None:
        try:
            node = db.session.scalar(select(Node).where(Node.base_url == normalize_base_url(ref)))
        except NodeInputError:
            return None
    return node


def remove_node(node: Node) -> None:
    db.session.delete(node)
    bump_version()
    db.session.commit()


def set_enabled(node: Node, enabled: bool) -> None:
    node.enabled = enabled
    bump_version()
    db.session.commit()
