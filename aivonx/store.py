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
from aivonx.models.columns import is_row_id
from aivonx.proxy.types import NodeSpec, ProxySettings

CONFIG_ID = 1
# The column sizes of Node.name and Node.base_url: PostgreSQL refuses longer values.
NODE_NAME_MAX = 100
BASE_URL_MAX = 500
NODE_FIELDS = ("name", "base_url", "enabled", "priority", "weight", "max_concurrent")


class NodeInputError(ValueError):
    """A node's fields are invalid; `field` names the offending one."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class NodeConflict(NodeInputError):
    """Another node has this name or base URL already."""


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
    return (parts.netloc + parts.path)[:NODE_NAME_MAX]


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


def process_settings(app_config: Mapping[str, Any]) -> dict[str, Any]:
    """The data path's settings that stay per process (AIVONX_* only, not in the database)."""
    return {
        "eject_after": app_config["AIVONX_EJECT_AFTER"],
        "ejection_base": app_config["AIVONX_EJECTION_BASE"],
        "ejection_max": app_config["AIVONX_EJECTION_MAX"],
        "queue_size": app_config["AIVONX_QUEUE_SIZE"],
        "queue_timeout": app_config["AIVONX_QUEUE_TIMEOUT"],
    }


def bump_version() -> None:
    """Mark a change for every process; call inside the transaction making the change."""
    ensure_config(current_app.config, commit=False)
    db.session.execute(
        update(ProxyConfig)
        .where(ProxyConfig.id == CONFIG_ID)
        # updated_at says when the settings changed; node changes move only the version.
        .values(version=ProxyConfig.version + 1, updated_at=ProxyConfig.updated_at)
    )


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
        settings = ProxySettings(**values, **process_settings(app_config), version=config.version if config else 0)
        nodes = [node_spec(node) for node in db.session.scalars(select(Node).order_by(Node.id))]
    finally:
        db.session.remove()
    return settings, nodes


def node_spec(node: Node) -> NodeSpec:
    """The runtime record of a node row."""
    return NodeSpec(
        id=node.id,
        name=node.name,
        base_url=node.base_url,
        enabled=node.enabled,
        priority=node.priority,
        weight=node.weight,
        max_concurrent=node.max_concurrent,
    )


def list_nodes() -> list[Node]:
    return list(db.session.scalars(select(Node).order_by(Node.id)))


def get_node(node_id: int) -> Node | None:
    return db.session.get(Node, node_id) if is_row_id(node_id) else None


def _check_unique(name: str, base_url: str, node_id: int | None = None) -> None:
    """Raise NodeConflict when another node than `node_id` has the name or the URL."""
    others = select(Node.id).where(Node.id != node_id) if node_id is not None else select(Node.id)
    if db.session.scalar(others.where(Node.name == name)) is not None:
        raise NodeConflict("name", f"a node named {name!r} exists already")
    if db.session.scalar(others.where(Node.base_url == base_url)) is not None:
        raise NodeConflict("base_url", f"a node with base_url {base_url!r} exists already")


def _commit_node(node: Node) -> None:
    """Bump the version and commit; a concurrent writer's duplicate becomes a NodeConflict."""
    name, base_url, node_id = node.name, node.base_url, node.id  # rollback expires the row
    bump_version()
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        _check_unique(name, base_url, node_id)  # names the field the other writer took
        raise


def add_node(base_url: str, name: str | None = None, **fields: Any) -> Node:
    base_url = normalize_base_url(base_url)
    name = (name or default_node_name(base_url)).strip()
    if not name:
        raise NodeInputError("name", "name must not be empty")
    _check_unique(name, base_url)
    node = Node(name=name, base_url=base_url, **fields)
    db.session.add(node)
    _commit_node(node)
    return node


def update_node(node: Node, **fields: Any) -> Node:
    """Change some of NODE_FIELDS of a node (what PUT and PATCH do); no change, no version bump."""
    unknown = set(fields) - set(NODE_FIELDS)
    if unknown:
        raise TypeError(f"not node fields: {', '.join(sorted(unknown))}")
    if "base_url" in fields:
        fields["base_url"] = normalize_base_url(fields["base_url"])
    if "name" in fields:
        fields["name"] = fields["name"].strip()
        if not fields["name"]:
            raise NodeInputError("name", "name must not be empty")
    changes = {key: value for key, value in fields.items() if getattr(node, key) != value}
    if not changes:
        return node
    _check_unique(changes.get("name", node.name), changes.get("base_url", node.base_url), node.id)
    for key, value in changes.items():
        setattr(node, key, value)
    _commit_node(node)
    return node


def seed_nodes(urls: Iterable[str]) -> list[Node]:
    """Add the nodes whose URL is not registered yet (idempotent)."""
    added = []
    for url in urls:
        base_url = normalize_base_url(url)
        if db.session.scalar(select(Node.id).where(Node.base_url == base_url)) is None:
            try:
                added.append(add_node(base_url))
            except (NodeConflict, IntegrityError):  # a concurrent start added it
                db.session.rollback()
    return added


def find_node(ref: str) -> Node | None:
    """A node by id, name or base URL."""
    if ref.isdigit():
        node = get_node(int(ref))
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
    update_node(node, enabled=enabled)


def get_config() -> ProxyConfig:
    return ensure_config(current_app.config)


def update_config(**fields: Any) -> ProxyConfig:
    """Change some of the live settings (the keys of `config_defaults`); no change, no version bump."""
    config = ensure_config(current_app.config)
    unknown = set(fields) - set(config_defaults(current_app.config))
    if unknown:
        raise TypeError(f"not proxy settings: {', '.join(sorted(unknown))}")
    changes = {key: value for key, value in fields.items() if getattr(config, key) != value}
    if not changes:
        return config
    for key, value in changes.items():
        setattr(config, key, value)
    bump_version()
    db.session.commit()
    return config
