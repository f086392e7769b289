"""The pages. Each change goes through the same functions the management API uses."""

from __future__ import annotations

from typing import Any

from flask import abort, current_app, flash, g, redirect, render_template, request, url_for

from aivonx import accounts, store
from aivonx.admin.auth import admin_required
from aivonx.admin.blueprint import bp
from aivonx.admin.forms import (
    ActionForm,
    ApiKeyForm,
    ConfigForm,
    NodeForm,
    PasswordForm,
    UserForm,
    UserUpdateForm,
    add_error,
    submitted,
)
from aivonx.api.api_keys.schemas import ApiKeyCreateSchema
from aivonx.api.logs.reader import LEVELS, SOURCES
from aivonx.api.nodes.resources import applied, node_or_404, node_views, proxy_runtime
from aivonx.api.nodes.schemas import NodeCreateSchema, NodePatchSchema
from aivonx.api.proxy_config.resources import changed
from aivonx.api.proxy_config.schemas import ProxyConfigPatchSchema
from aivonx.api.users.resources import user_or_404
from aivonx.api.users.schemas import PasswordSetSchema, UserSchema, UserUpdateSchema
from aivonx.logs import log_file
from aivonx.proxy.types import ACTIVE

Page = tuple[str, int] | str


@bp.route("/")
def dashboard() -> Page:
    return render_template("admin/dashboard.html")


# -- nodes -------------------------------------------------------------------------------


def nodes_page(form: NodeForm | None = None, status: int = 200) -> Page:
    views = node_views(store.list_nodes(), proxy_runtime())
    return render_template("admin/nodes.html", nodes=views, form=form or NodeForm(), action=ActionForm()), status


@bp.route("/nodes")
def nodes() -> Page:
    return nodes_page()


@bp.route("/nodes", methods=["POST"])
@admin_required
def add_node() -> Any:
    form = NodeForm()
    fields = submitted(form, NodeCreateSchema(), form.values)
    if fields is not None:
        try:
            node = store.add_node(fields.pop("base_url"), fields.pop("name", None), **fields)
        except store.NodeInputError as error:
            add_error(form, error.field, error.message)
        else:
            view = applied(node, probe=True)
            flash(f"Node {node.name} added: {view['pool']}.")
            return redirect(url_for("admin.nodes"))
    return nodes_page(form, 400)


@bp.route("/nodes/<int:node_id>", methods=["GET", "POST"])
def edit_node(node_id: int) -> Any:
    node = node_or_404(node_id)
    form = NodeForm(obj=node)
    if request.method == "POST":
        if g.ui_user.role != "admin":
            abort(403, description="this needs the admin role")
        fields = submitted(form, NodePatchSchema(), form.values)
        if fields is not None:
            was_enabled, old_url = node.enabled, node.base_url
            try:
                store.update_node(node, **fields)
            except store.NodeInputError as error:
                add_error(form, error.field, error.message)
            else:
                applied(node, new_server=node.base_url != old_url, probe=node.enabled and not was_enabled)
                flash(f"Node {node.name} saved.")
                return redirect(url_for("admin.nodes"))
        return render_template("admin/node_form.html", form=form, node=node), 400
    return render_template("admin/node_form.html", form=form, node=node)


@bp.route("/nodes/<int:node_id>/<any(enable, disable, check, delete):action>", methods=["POST"])
@admin_required
def node_action(node_id: int, action: str) -> Any:
    node = node_or_404(node_id)
    if not ActionForm().validate_on_submit():
        abort(400, description="the form expired; reload the page and try again")
    rt = proxy_runtime()
    if action == "delete":
        name = node.name
        store.remove_node(node)
        rt.sync(force=True)
        flash(f"Node {name} deleted.")
    elif action == "check":
        rt.check_now([store.node_spec(node)], readmit=True)
        flash(f"Node {node.name} probed: {node_views([node], rt)[0]['pool']}.")
    else:
        was_enabled = node.enabled
        store.update_node(node, enabled=action == "enable")
        view = applied(node, probe=node.enabled and not was_enabled)
        flash(f"Node {node.name} {action}d: {view['pool']}.")
    return redirect(url_for("admin.nodes"))


# -- settings ----------------------------------------------------------------------------


@bp.route("/settings", methods=["GET", "POST"])
def settings() -> Any:
    config = store.get_config()
    form = ConfigForm(obj=config)
    if request.method == "POST":
        if g.ui_user.role != "admin":
            abort(403, description="this needs the admin role")
        fields = submitted(form, ProxyConfigPatchSchema(), form.values)
        if fields is not None:
            changed(fields)
            flash("Settings saved; every worker applies them within a second.")
            return redirect(url_for("admin.settings"))
        return render_template("admin/settings.html", form=form), 400
    return render_template("admin/settings.html", form=form)


# -- models ------------------------------------------------------------------------------


@bp.route("/models")
def models() -> Page:
    rt = proxy_runtime()
    manager = rt.manager
    placements = [
        {
            "model": model,
            "nodes": [node.name for node in holders],
            "active_nodes": [node.name for node in holders if manager.pool_of(node) == ACTIVE],
        }
        for model, holders in sorted(manager.known_models().items())
    ]
    active = [{"id": node.id, "name": node.name} for node in manager.active_nodes()]
    return render_template("admin/models.html", models=placements, active_nodes=active)


# -- users and API keys (admins) ---------------------------------------------------------


def users_page(status: int = 200, **forms: Any) -> Page:
    users = accounts.list_users()
    rows = [
        {
            "user": user,
            "role_form": forms.get(f"update{user.id}") or UserUpdateForm(prefix=f"u{user.id}", obj=user),
            "password_form": forms.get(f"password{user.id}") or PasswordForm(prefix=f"p{user.id}"),
        }
        for user in users
    ]
    return render_template("admin/users.html", rows=rows, form=forms.get("create") or UserForm()), status


@bp.route("/users")
@admin_required
def users() -> Page:
    return users_page()


@bp.route("/users", methods=["POST"])
@admin_required
def create_user() -> Any:
    form = UserForm()
    fields = submitted(form, UserSchema(), form.values)
    if fields is not None:
        try:
            user = accounts.create_user(fields["username"], fields["password"], fields["role"])
        except accounts.AccountConflict as error:
            add_error(form, error.field, error.message)
        else:
            flash(f"User {user.username} created ({user.role}).")
            return redirect(url_for("admin.users"))
    return users_page(400, create=form)


@bp.route("/users/<int:user_id>", methods=["POST"])
@admin_required
def update_user(user_id: int) -> Any:
    user = user_or_404(user_id)
    form = UserUpdateForm(prefix=f"u{user.id}")
    fields = submitted(form, UserUpdateSchema(), lambda: {"role": form.role.data, "active": bool(form.active.data)})
    if fields is not None:
        try:
            accounts.update_user(user, role=fields.get("role"), active=fields.get("active"))
        except accounts.AccountConflict as error:
            add_error(form, error.field, error.message)
        else:
            flash(f"User {user.username} saved.")
            return redirect(url_for("admin.users"))
    return users_page(400, **{f"update{user.id}": form})


@bp.route("/users/<int:user_id>/password", methods=["POST"])
@admin_required
def set_password(user_id: int) -> Any:
    user = user_or_404(user_id)
    form = PasswordForm(prefix=f"p{user.id}")
    fields = submitted(form, PasswordSetSchema(), lambda: {"password": form.password.data or ""})
    if fields is not None:
        accounts.set_password(user, fields["password"])
        flash(f"Password of {user.username} set.")
        return redirect(url_for("admin.users"))
    return users_page(400, **{f"password{user.id}": form})


def keys_page(form: ApiKeyForm | None = None, new_key: str | None = None, status: int = 200) -> Page:
    return render_template(
        "admin/keys.html",
        keys=accounts.list_api_keys(),
        form=form or ApiKeyForm(),
        new_key=new_key,
        action=ActionForm(),
    ), status


@bp.route("/keys")
@admin_required
def keys() -> Page:
    return keys_page()


@bp.route("/keys", methods=["POST"])
@admin_required
def create_key() -> Page:
    form = ApiKeyForm()
    fields = submitted(form, ApiKeyCreateSchema(), lambda: {"name": form.name.data or ""})
    if fields is not None:
        _api_key, key = accounts.create_api_key(fields["name"], g.ui_user)
        # Shown in this answer only (not put in the session cookie), like the API does.
        return keys_page(ApiKeyForm(formdata=None), new_key=key, status=201)
    return keys_page(form, status=400)


@bp.route("/keys/<int:key_id>/revoke", methods=["POST"])
@admin_required
def revoke_key(key_id: int) -> Any:
    if not ActionForm().validate_on_submit():
        abort(400, description="the form expired; reload the page and try again")
    if not accounts.revoke_api_key(key_id):
        abort(404, description=f"no unrevoked API key with id {key_id}")
    flash("API key revoked.")
    return redirect(url_for("admin.keys"))


# -- logs --------------------------------------------------------------------------------


@bp.route("/logs")
def logs() -> Page:
    return render_template(
        "admin/logs.html", levels=tuple(LEVELS), sources=SOURCES, log_path=log_file(current_app), query=request.args
    )
