"""/api/users: admins list, create, change role, disable and reset passwords of users."""

import pytest

from aivonx.extensions import db
from aivonx.models import User
from tests.conftest import DEFAULT_PASSWORD, create_user
from tests.integration.api.helpers import assert_admin_only, assert_problem

NEW_PASSWORD = "a-brand-new-password"
UNKNOWN_ID = 999_999
USER_FIELDS = {"id", "username", "role", "active", "created_at", "updated_at"}


def log_in(client, username, password=DEFAULT_PASSWORD):
    return client.post("/api/account/login", json={"username": username, "password": password})


def bearer(client, username, password=DEFAULT_PASSWORD):
    return {"Authorization": f"Bearer {log_in(client, username, password).get_json()['access']}"}


# -- auth on every operation ---------------------------------------------------------------

OPERATIONS = [
    ("get", "/api/users", None),
    ("post", "/api/users", {"username": "zoe", "password": NEW_PASSWORD}),
    ("get", "/api/users/1", None),
    ("patch", "/api/users/1", {"role": "viewer"}),
    ("put", "/api/users/1/password", {"password": NEW_PASSWORD}),
]


@pytest.mark.parametrize(("method", "path", "body"), OPERATIONS)
def test_every_operation_needs_an_admin_token(client, login, method, path, body):
    assert_admin_only(client, login, method, path, body)


# -- list, create, get ---------------------------------------------------------------------


def test_create_then_get_and_list_never_show_password_hashes(client, login):
    admin = login("admin")
    created = client.post("/api/users", headers=admin, json={"username": "alice", "password": NEW_PASSWORD})
    assert created.status_code == 201
    alice = created.get_json()
    assert set(alice) == USER_FIELDS
    assert alice["username"] == "alice" and alice["role"] == "viewer" and alice["active"] is True
    assert alice["created_at"].endswith("+00:00")

    fetched = client.get(f"/api/users/{alice['id']}", headers=admin)
    assert fetched.status_code == 200 and fetched.get_json() == alice
    listed = client.get("/api/users", headers=admin)
    assert listed.status_code == 200
    assert [user["username"] for user in listed.get_json()] == ["admin-user", "alice"]
    for response in (created, fetched, listed):
        assert b"password" not in response.data and b"scrypt" not in response.data

    # The new user can log in, and has the role asked for.
    assert log_in(client, "alice", NEW_PASSWORD).status_code == 200
    ops = client.post("/api/users", headers=admin, json={"username": "ops", "password": NEW_PASSWORD, "role": "admin"})
    assert ops.status_code == 201 and ops.get_json()["role"] == "admin"


def test_created_password_is_stored_hashed(app, client, login):
    created = client.post("/api/users", headers=login(), json={"username": "alice", "password": NEW_PASSWORD})
    with app.app_context():
        stored = db.session.get(User, created.get_json()["id"]).password_hash
    assert NEW_PASSWORD not in stored and stored.startswith("scrypt:")


def test_taken_username_is_a_conflict_naming_username(client, login):
    admin = login("admin")
    body = {"username": "alice", "password": NEW_PASSWORD}
    assert client.post("/api/users", headers=admin, json=body).status_code == 201
    problem = assert_problem(client.post("/api/users", headers=admin, json=body), 409, "username")
    assert "'alice' exists already" in problem["detail"]
    assert len(client.get("/api/users", headers=admin).get_json()) == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": NEW_PASSWORD}, "username"),
        ({"username": "", "password": NEW_PASSWORD}, "username"),
        ({"username": "x" * 81, "password": NEW_PASSWORD}, "username"),
        ({"username": " alice", "password": NEW_PASSWORD}, "username"),
        ({"username": "al\x00ice", "password": NEW_PASSWORD}, "username"),
        ({"username": 42, "password": NEW_PASSWORD}, "username"),
        ({"username": "alice"}, "password"),
        ({"username": "alice", "password": "short"}, "password"),
        ({"username": "alice", "password": "\ud800" * 10}, "password"),
        ({"username": "alice", "password": NEW_PASSWORD, "role": "root"}, "role"),
        ({"username": "alice", "password": NEW_PASSWORD, "active": False}, "active"),
        ({"username": "alice", "password": NEW_PASSWORD, "password_hash": "x"}, "password_hash"),
    ],
)
def test_invalid_new_users_are_422_naming_the_field(client, login, body, field):
    problem = assert_problem(client.post("/api/users", headers=login(), json=body), 422, field)
    assert field in problem["detail"]


def test_longest_username_is_accepted(client, login):
    created = client.post("/api/users", headers=login(), json={"username": "x" * 80, "password": NEW_PASSWORD})
    assert created.status_code == 201


def test_unknown_user_ids_are_404(client, login):
    admin = login("admin")
    for user_id in (UNKNOWN_ID, 0, 2**31, 2**70):
        assert_problem(client.get(f"/api/users/{user_id}", headers=admin), 404)
    assert_problem(client.patch(f"/api/users/{UNKNOWN_ID}", headers=admin, json={"active": False}), 404, "user_id")
    password = client.put(f"/api/users/{UNKNOWN_ID}/password", headers=admin, json={"password": NEW_PASSWORD})
    assert_problem(password, 404, "user_id")


# -- change role, disable ------------------------------------------------------------------


def test_change_role(app, client, login):
    admin = login("admin")
    alice_id = create_user(app, "alice", "viewer")
    alice = bearer(client, "alice")
    assert client.get("/api/users", headers=alice).status_code == 403

    promoted = client.patch(f"/api/users/{alice_id}", headers=admin, json={"role": "admin"})
    assert promoted.status_code == 200 and promoted.get_json()["role"] == "admin"
    # Roles are read from the database on each request: her existing token now opens admin routes.
    assert client.get("/api/users", headers=alice).status_code == 200

    demoted = client.patch(f"/api/users/{alice_id}", headers=admin, json={"role": "viewer"})
    assert demoted.status_code == 200 and demoted.get_json()["role"] == "viewer"
    assert client.get("/api/users", headers=alice).status_code == 403


def test_disable_stops_login_and_existing_tokens_then_enable_restores(app, client, login):
    admin = login("admin")
    alice_id = create_user(app, "alice", "viewer")
    alice = bearer(client, "alice")
    assert client.get("/api/account/me", headers=alice).status_code == 200

    disabled = client.patch(f"/api/users/{alice_id}", headers=admin, json={"active": False})
    assert disabled.status_code == 200 and disabled.get_json()["active"] is False
    assert_problem(client.get("/api/account/me", headers=alice), 401)
    assert_problem(log_in(client, "alice"), 401)

    enabled = client.patch(f"/api/users/{alice_id}", headers=admin, json={"active": True})
    assert enabled.status_code == 200 and enabled.get_json()["active"] is True
    assert client.get("/api/account/me", headers=alice).status_code == 200


def test_empty_patch_changes_nothing(app, client, login):
    alice_id = create_user(app, "alice", "viewer")
    unchanged = client.patch(f"/api/users/{alice_id}", headers=login(), json={})
    assert unchanged.status_code == 200
    assert unchanged.get_json()["role"] == "viewer" and unchanged.get_json()["active"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "root"}, "role"),
        ({"role": None}, "role"),
        ({"active": "maybe"}, "active"),
        ({"username": "renamed"}, "username"),
        ({"password": NEW_PASSWORD}, "password"),
    ],
)
def test_invalid_changes_are_422_naming_the_field(app, client, login, body, field):
    alice_id = create_user(app, "alice", "viewer")
    assert_problem(client.patch(f"/api/users/{alice_id}", headers=login(), json=body), 422, field)


@pytest.mark.parametrize(
    ("change", "field"),
    [({"role": "viewer"}, "role"), ({"active": False}, "active"), ({"role": "viewer", "active": False}, "active")],
)
def test_the_last_active_admin_can_be_neither_demoted_nor_disabled(app, client, login, change, field):
    admin = login("admin")
    admin_id = client.get("/api/account/me", headers=admin).get_json()["id"]
    # Another admin who is disabled does not count.
    dormant_id = create_user(app, "dormant", "admin")
    client.patch(f"/api/users/{dormant_id}", headers=admin, json={"active": False})

    problem = assert_problem(client.patch(f"/api/users/{admin_id}", headers=admin, json=change), 409, field)
    assert "'admin-user' is the last active admin" in problem["detail"]
    me = client.get(f"/api/users/{admin_id}", headers=admin).get_json()
    assert me["role"] == "admin" and me["active"] is True

    # With a second active admin it works, and then that one is the last.
    client.patch(f"/api/users/{dormant_id}", headers=admin, json={"active": True})
    assert client.patch(f"/api/users/{admin_id}", headers=admin, json=change).status_code == 200
    other = bearer(client, "dormant")
    assert_problem(client.patch(f"/api/users/{dormant_id}", headers=other, json=change), 409, field)


def test_changes_that_keep_admin_rights_are_allowed_on_the_last_admin(client, login):
    admin = login("admin")
    admin_id = client.get("/api/account/me", headers=admin).get_json()["id"]
    same = client.patch(f"/api/users/{admin_id}", headers=admin, json={"role": "admin", "active": True})
    assert same.status_code == 200


# -- set a password ------------------------------------------------------------------------


def test_admin_sets_a_password(app, client, login):
    alice_id = create_user(app, "alice", "viewer")
    response = client.put(f"/api/users/{alice_id}/password", headers=login(), json={"password": NEW_PASSWORD})
    assert response.status_code == 204 and response.data == b""
    assert log_in(client, "alice", NEW_PASSWORD).status_code == 200
    assert log_in(client, "alice", DEFAULT_PASSWORD).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "password"), ({"password": "short"}, "password"), ({"password": 12345678}, "password"),
     ({"password": NEW_PASSWORD, "role": "admin"}, "role")],
)  # fmt: skip
def test_invalid_passwords_are_422(app, client, login, body, field):
    alice_id = create_user(app, "alice", "viewer")
    assert_problem(client.put(f"/api/users/{alice_id}/password", headers=login(), json=body), 422, field)
    assert log_in(client, "alice").status_code == 200
