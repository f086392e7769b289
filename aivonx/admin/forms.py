"""The pages' forms. WTForms renders them and checks CSRF and types; the management API's
marshmallow schemas check the values, so a page accepts exactly what the API accepts and
shows each message next to its field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import marshmallow as ma
from flask_wtf import FlaskForm
from wtforms import BooleanField, FloatField, IntegerField, PasswordField, SelectField, StringField
from wtforms.validators import InputRequired

from aivonx.models import ROLES
from config import STRATEGIES


def submitted(form: FlaskForm, schema: ma.Schema, values: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """The posted form's values loaded by `schema`, or None with every message on its field.

    WTForms checks the CSRF token and the types (a number field holds a number); the schema
    checks the values. Fields WTForms refused are left out of the schema's check, so each
    field shows its own messages, all at once.
    """
    if not form.is_submitted():
        return None
    form_ok = form.validate()
    data = values()
    refused = tuple(name for name in data if getattr(getattr(form, name, None), "errors", None))
    for name in refused:
        del data[name]
    fields = validated(form, schema, data, partial=refused)
    return fields if form_ok and fields is not None else None


def validated(
    form: FlaskForm, schema: ma.Schema, data: dict[str, Any], partial: tuple[str, ...] = ()
) -> dict[str, Any] | None:
    """`data` loaded by `schema`, or None with the schema's messages put on the form's fields."""
    try:
        return schema.load(data, partial=partial or None)
    except ma.ValidationError as error:
        messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
        for field_name, field_messages in messages.items():
            add_error(form, field_name, field_messages)
        return None


def add_error(form: FlaskForm, field_name: str, messages: Any) -> None:
    texts = [str(m) for m in messages] if isinstance(messages, list) else [str(messages)]
    field = getattr(form, field_name, None)
    if field is not None and hasattr(field, "errors"):
        field.errors = [*field.errors, *texts]
    else:
        form.form_errors.extend(texts)


class ActionForm(FlaskForm):
    """A button that changes something: only its CSRF token."""


class NodeForm(FlaskForm):
    name = StringField("Name", description="Unique; empty: host:port of the URL")
    base_url = StringField("URL", description="http://host:11434")
    priority = IntegerField("Priority", default=0, validators=[InputRequired()], description="Lower is preferred")
    weight = IntegerField("Weight", default=1, validators=[InputRequired()], description="Relative capacity")
    max_concurrent = IntegerField(
        "Max concurrent", default=0, validators=[InputRequired()], description="Requests at once; 0 is unlimited"
    )
    enabled = BooleanField("Enabled", default=True)

    def values(self) -> dict[str, Any]:
        data = {name: getattr(self, name).data for name in ("base_url", "priority", "weight", "max_concurrent")}
        data["enabled"] = bool(self.enabled.data)
        data["base_url"] = (data["base_url"] or "").strip()
        if self.name.data:
            data["name"] = self.name.data
        return data


class ConfigForm(FlaskForm):
    strategy = SelectField("Strategy", choices=list(STRATEGIES))
    health_interval = FloatField("Health interval (s)", validators=[InputRequired()])
    standby_interval = FloatField("Standby interval (s)", validators=[InputRequired()])
    probe_timeout = FloatField("Probe timeout (s)", validators=[InputRequired()])
    connect_timeout = FloatField("Connect timeout (s)", validators=[InputRequired()])
    first_byte_timeout = FloatField("First byte timeout (s)", validators=[InputRequired()])
    max_tries = IntegerField("Max tries", validators=[InputRequired()])
    models_max_age = FloatField("Model lists max age (s)", validators=[InputRequired()])
    forward_authorization = BooleanField("Forward the client's Authorization header")
    require_api_key = BooleanField("Require an API key on Ollama and /v1 routes")

    FIELDS = (
        "strategy", "health_interval", "standby_interval", "probe_timeout", "connect_timeout",
        "first_byte_timeout", "max_tries", "models_max_age", "forward_authorization", "require_api_key",
    )  # fmt: skip

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name).data for name in self.FIELDS}


class UserForm(FlaskForm):
    username = StringField("Username")
    password = PasswordField("Password")
    role = SelectField("Role", choices=list(ROLES), default="viewer")

    def values(self) -> dict[str, Any]:
        return {"username": self.username.data or "", "password": self.password.data or "", "role": self.role.data}


class UserUpdateForm(FlaskForm):
    role = SelectField("Role", choices=list(ROLES))
    active = BooleanField("Active")


class PasswordForm(FlaskForm):
    password = PasswordField("New password")


class ApiKeyForm(FlaskForm):
    name = StringField("Name", description="What the key is for, e.g. open-webui")
