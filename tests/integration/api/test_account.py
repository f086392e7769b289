"""POST /api/account/login, /refresh, GET /me, POST /password; the bootstrap admin."""

from datetime import timedelta

import pytest

from tests.conftest import DEFAULT_PASSWORD, create_user


def test_login_returns_tokens_that_open_the_api(app, client):
    create_user(app, "alice", "viewer")
    response = client.post("/api/account/login", json={"username": "alice", "password": DEFAULT_PASSWORD})
    assert response.status_code == 200
    tokens = response.get_json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 15 * 60
    me = client.get("/api/account/me", headers={"Authorization": f"Bearer {tokens['access']}"})
    assert me.status_code == 200
    assert me.get_json()["username"] == "alice" and me.get_json()["role"] == "viewer"
    refreshed = client.post("/api/account/refresh", headers={"Authorization": f"Bearer {tokens['refresh']}"})
    assert refreshed.status_code == 200 and "refresh" not in refreshed.get_json()
    # A refresh token is not an access token, and the other way round.
    assert client.get("/api/account/me", headers={"Authorization": f"Bearer {tokens['refresh']}"}).status_code == 401
    refresh_with_access = client.post("/api/account/refresh", headers={"Authorization": f"Bearer {tokens['access']}"})
    assert refresh_with_access.status_code == 401


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"username": "alice", "password": "wrong"}, 401),
        ({"username": "nobody", "password": DEFAULT_PASSWORD}, 401),
        ({"username": "alice"}, 422),
        ({"password": "x"}, 422),
        ({}, 422),
    ],
)
def test_bad_logins_are_clear_problem_details(app, client, body, status):
    create_user(app, "alice", "viewer")
    response = client.post("/api/account/login", json=body)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["status"] == status and problem["detail"]
    if status == 422:
        assert problem["errors"]


def test_invalid_json_body_is_a_problem_not_a_500(client):
    response = client.post("/api/account/login", data=b"{oops", content_type="application/json")
    assert response.status_code in (400, 422)
    assert response.mimetype == "application/problem+json"


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (None, "missing credentials"),
        ("Bearer not-a-jwt", "invalid token"),
        ("Basic YWRtaW46YWRtaW4=", "missing credentials"),
    ],
)
def test_missing_or_malformed_tokens_are_401(client, header, detail):
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/account/me", headers=headers)
    assert response.status_code == 401
    assert detail in response.get_json()["detail"]
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_expired_token_is_401(make_app):
    app = make_app(JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=-1))
    create_user(app, "alice")
    client = app.test_client()
    access = client.post("/api/account/login", json={"username": "alice", "password": DEFAULT_PASSWORD}).get_json()
    response = client.get("/api/account/me", headers={"Authorization": f"Bearer {access['access']}"})
    assert response.status_code == 401 and response.get_json()["detail"] == "token has expired"


def test_disabled_user_cannot_log_in_and_its_tokens_stop_working(app, client):
    from aivonx.extensions import db
    from aivonx.models import User

    user_id = create_user(app, "alice")
    tokens = client.post("/api/account/login", json={"username": "alice", "password": DEFAULT_PASSWORD}).get_json()
    with app.app_context():
        db.session.get(User, user_id).active = False
        db.session.commit()
    assert client.get("/api/account/me", headers={"Authorization": f"Bearer {tokens['access']}"}).status_code == 401
    again = client.post("/api/account/login", json={"username": "alice", "password": DEFAULT_PASSWORD})
    assert again.status_code == 401


def test_change_own_password(app, client, login):
    headers = login("viewer")
    wrong = client.post("/api/account/password", headers=headers,
                        json={"current_password": "nope", "new_password": "another-password"})  # fmt: skip
    assert wrong.status_code == 400 and wrong.get_json()["errors"] == {"current_password": ["is wrong"]}
    short = client.post("/api/account/password", headers=headers,
                        json={"current_password": DEFAULT_PASSWORD, "new_password": "short"})  # fmt: skip
    assert short.status_code == 422 and "new_password" in short.get_json()["errors"]
    done = client.post("/api/account/password", headers=headers,
                       json={"current_password": DEFAULT_PASSWORD, "new_password": "another-password"})  # fmt: skip
    assert done.status_code == 204
    login_again = {"username": "viewer-user", "password": "another-password"}
    assert client.post("/api/account/login", json=login_again).status_code == 200


def test_init_creates_the_bootstrap_admin_once_and_prints_a_generated_password(make_app):
    app = make_app(AIVONX_ENV="development")
    runner = app.test_cli_runner()
    first = runner.invoke(args=["init"])
    assert "created admin user 'admin' with password" in first.output
    password = first.output.split("with password ", 1)[1].split(" ", 1)[0]
    logged_in = app.test_client().post("/api/account/login", json={"username": "admin", "password": password})
    assert logged_in.status_code == 200
    assert "created admin" not in runner.invoke(args=["init"]).output


def test_production_refuses_a_missing_or_short_admin_password(make_app):
    app = make_app(AIVONX_ENV="production", SECRET_KEY="x" * 32)
    result = app.test_cli_runner().invoke(args=["init"])
    assert result.exit_code != 0 and "AIVONX_ADMIN_PASSWORD must be set in production" in result.output
    app = make_app(AIVONX_ENV="production", SECRET_KEY="x" * 32, AIVONX_ADMIN_PASSWORD="short")
    result = app.test_cli_runner().invoke(args=["init"])
    assert result.exit_code != 0 and "at least 8 characters" in result.output


def test_passwords_are_stored_hashed(app):
    from aivonx.extensions import db
    from aivonx.models import User

    user_id = create_user(app, "alice")
    with app.app_context():
        stored = db.session.get(User, user_id).password_hash
    assert DEFAULT_PASSWORD not in stored and stored.startswith(("scrypt:", "pbkdf2:"))
