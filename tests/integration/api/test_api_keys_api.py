"""/api/keys: admins create API keys (shown once, stored hashed), list and revoke them."""

import hashlib

import pytest
from sqlalchemy import select

from aivonx import store
from aivonx.extensions import db
from aivonx.models import ApiKey
from tests.integration.api.helpers import assert_admin_only, assert_problem

LISTED_FIELDS = {"id", "name", "prefix", "created_at", "last_used_at", "revoked_at", "user"}


def create_key(client, headers, name="open-webui"):
    response = client.post("/api/keys", headers=headers, json={"name": name})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def stored_version(app):
    with app.app_context():
        return store.current_version()


OPERATIONS = [
    ("get", "/api/keys", None),
    ("post", "/api/keys", {"name": "ci"}),
    ("delete", "/api/keys/1", None),
]


@pytest.mark.parametrize(("method", "path", "body"), OPERATIONS)
def test_every_operation_needs_an_admin_token(client, login, method, path, body):
    assert_admin_only(client, login, method, path, body)


def test_create_shows_the_key_once_and_stores_only_its_hash(app, client, login):
    before = stored_version(app)
    created = create_key(client, login())
    assert set(created) == {"id", "name", "prefix", "key", "created_at"}
    key = created["key"]
    assert key.startswith("aivonx_") and len(key) > 40
    assert created["name"] == "open-webui" and created["prefix"] == key[: len(created["prefix"])]
    assert len(created["prefix"]) == len("aivonx_") + 6
    # Every process must learn about the key: the version stamp moved in the same commit.
    assert stored_version(app) == before + 1

    with app.app_context():
        row = db.session.get(ApiKey, created["id"])
        columns = {column.name: getattr(row, column.name) for column in ApiKey.__table__.columns}
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert not any(key in str(value) for value in columns.values())

    listed = client.get("/api/keys", headers=login())
    assert key.encode() not in listed.data and row.key_hash.encode() not in listed.data


def test_list_shows_every_key_with_its_creator(client, login):
    first = create_key(client, login("admin"), "open-webui")
    second = create_key(client, login("admin"), "ci")
    listed = client.get("/api/keys", headers=login("admin"))
    assert listed.status_code == 200
    keys = listed.get_json()
    assert [entry["id"] for entry in keys] == [first["id"], second["id"]]
    for entry, created in zip(keys, (first, second), strict=True):
        assert set(entry) == LISTED_FIELDS
        assert entry["name"] == created["name"] and entry["prefix"] == created["prefix"]
        assert entry["created_at"] == created["created_at"]
        assert entry["user"] == "admin-user"
        assert entry["last_used_at"] is None and entry["revoked_at"] is None


def test_names_may_repeat(client, login):
    # Rotating a key means creating its successor under the same name before revoking the old one.
    first, second = create_key(client, login(), "ci"), create_key(client, login(), "ci")
    assert first["id"] != second["id"] and first["key"] != second["key"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "ci\n"}, "name"),
        ({"name": None}, "name"),
        ({"name": "ci", "key": "aivonx_mine"}, "key"),
    ],
)
def test_invalid_names_are_422_naming_the_field(app, client, login, body, field):
    before = stored_version(app)
    assert_problem(client.post("/api/keys", headers=login(), json=body), 422, field)
    assert stored_version(app) == before
    assert client.get("/api/keys", headers=login()).get_json() == []


def test_revoke_keeps_the_row_for_audit(app, client, login):
    created = create_key(client, login())
    before = stored_version(app)
    revoked = client.delete(f"/api/keys/{created['id']}", headers=login())
    assert revoked.status_code == 204 and revoked.data == b""
    assert stored_version(app) == before + 1
    [entry] = client.get("/api/keys", headers=login()).get_json()
    assert entry["id"] == created["id"] and entry["revoked_at"] is not None
    with app.app_context():
        assert db.session.scalar(select(ApiKey.revoked_at).where(ApiKey.id == created["id"])) is not None


def test_revoking_twice_or_an_unknown_key_is_404(app, client, login):
    created = create_key(client, login())
    assert client.delete(f"/api/keys/{created['id']}", headers=login()).status_code == 204
    before = stored_version(app)
    again = assert_problem(client.delete(f"/api/keys/{created['id']}", headers=login()), 404, "key_id")
    assert f"no unrevoked API key with id {created['id']}" in again["detail"]
    for key_id in (999_999, 0, 2**31, 2**70):
        assert_problem(client.delete(f"/api/keys/{key_id}", headers=login()), 404)
    assert stored_version(app) == before


def test_keys_of_a_user_stay_listed_after_the_creator_is_disabled(client, login):
    # The creator is audit information; a key is a service credential and keeps working.
    admin = login("admin")
    created = create_key(client, admin)
    second_admin = client.post(
        "/api/users", headers=admin, json={"username": "ops", "password": "p" * 12, "role": "admin"}
    )
    admin_id = client.get("/api/account/me", headers=admin).get_json()["id"]
    ops = client.post("/api/account/login", json={"username": "ops", "password": "p" * 12}).get_json()["access"]
    assert second_admin.status_code == 201
    ops_headers = {"Authorization": f"Bearer {ops}"}
    assert client.patch(f"/api/users/{admin_id}", headers=ops_headers, json={"active": False}).status_code == 200
    [entry] = client.get("/api/keys", headers=ops_headers).get_json()
    assert entry["id"] == created["id"] and entry["user"] == "admin-user" and entry["revoked_at"] is None
