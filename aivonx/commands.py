"""Flask CLI: `flask --app aivonx init` and the `nodes` group."""

from __future__ import annotations

import secrets

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from flask_migrate import upgrade
from sqlalchemy import select

from aivonx import store
from aivonx.extensions import db
from aivonx.models import Node, User
from aivonx.security import MIN_PASSWORD_LENGTH, hash_password

nodes_cli = AppGroup("nodes", help="Manage the Ollama nodes behind the proxy.")


@click.command("init")
@with_appcontext
def init_command() -> None:
    """Migrate the database, create the settings row, the first admin and the AIVONX_NODES (idempotent)."""
    upgrade()
    store.ensure_config(current_app.config)
    ensure_admin()
    for node in store.seed_nodes(current_app.config["AIVONX_NODES"]):
        click.echo(f"added node {node.name} ({node.base_url})")
    click.echo("database ready")


def ensure_admin() -> None:
    """Create the bootstrap admin when there is no user at all.

    Its password is AIVONX_ADMIN_PASSWORD; in development a generated one is printed once,
    production refuses to go on without one.
    """
    if db.session.scalar(select(User.id).limit(1)) is not None:
        return
    username = current_app.config["AIVONX_ADMIN_USER"]
    password = current_app.config["AIVONX_ADMIN_PASSWORD"]
    generated = False
    if not password:
        if current_app.config["AIVONX_ENV"] == "production":
            raise click.ClickException("AIVONX_ADMIN_PASSWORD must be set in production to create the first admin")
        password, generated = secrets.token_urlsafe(12), True
    if len(password) < MIN_PASSWORD_LENGTH:
        raise click.ClickException(f"AIVONX_ADMIN_PASSWORD must be at least {MIN_PASSWORD_LENGTH} characters")
    db.session.add(User(username=username, password_hash=hash_password(password), role="admin"))
    db.session.commit()
    if generated:
        click.echo(f"created admin user {username!r} with password {password} (shown once; change it)")
    else:
        click.echo(f"created admin user {username!r}")


def _node_or_fail(ref: str) -> Node:
    node = store.find_node(ref)
    if node is None:
        raise click.ClickException(f"no node {ref!r} (give an id, a name or a base URL)")
    return node


@nodes_cli.command("add")
@click.argument("base_url")
@click.option("--name", help="Defaults to host:port of the URL.")
@click.option("--priority", type=int, default=0, show_default=True, help="Lower is preferred.")
@click.option("--weight", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--max-concurrent", type=click.IntRange(min=0), default=0, show_default=True, help="0: unlimited.")
@click.option("--disabled", is_flag=True, help="Add it disabled.")
def add_node(base_url: str, name: str | None, priority: int, weight: int, max_concurrent: int, disabled: bool) -> None:
    try:
        node = store.add_node(
            base_url, name, priority=priority, weight=weight, max_concurrent=max_concurrent, enabled=not disabled
        )
    except store.NodeInputError as exc:
        raise click.BadParameter(exc.message, param_hint=exc.field) from None
    click.echo(f"added node {node.id} {node.name} ({node.base_url})")


@nodes_cli.command("list")
def list_nodes() -> None:
    rows = db.session.scalars(select(Node).order_by(Node.id)).all()
    if not rows:
        click.echo("no nodes")
    for node in rows:
        state = "enabled" if node.enabled else "disabled"
        click.echo(f"{node.id}\t{node.name}\t{node.base_url}\t{state}\tpriority={node.priority}\tweight={node.weight}")


@nodes_cli.command("remove")
@click.argument("node")
def remove_node(node: str) -> None:
    found = _node_or_fail(node)
    store.remove_node(found)
    click.echo(f"removed node {found.name}")


def _set_enabled(node: str, enabled: bool) -> None:
    found = _node_or_fail(node)
    store.set_enabled(found, enabled)
    click.echo(f"{'enabled' if enabled else 'disabled'} node {found.name}")


@nodes_cli.command("enable")
@click.argument("node")
def enable_node(node: str) -> None:
    """Let the node take requests again (health decides when)."""
    _set_enabled(node, True)


@nodes_cli.command("disable")
@click.argument("node")
def disable_node(node: str) -> None:
    """Take the node out of every pool until an operator enables it."""
    _set_enabled(node, False)


def register_commands(app: Flask) -> None:
    app.cli.add_command(init_command)
    app.cli.add_command(nodes_cli)
