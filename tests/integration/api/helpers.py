"""Helpers shared by the management API tests."""

import secrets
from typing import Any

from aivonx import store
from tests.conftest import DEFAULT_PASSWORD, create_user


def headers_for(app: Any, role: str = "admin") -> dict[str, str]:
    """Authorization headers of a new user of `role`, for this app (each app signs its own tokens)."""
    username = f"{role}-{secrets.token_hex(4)}"
    create_user(app, username, role)
    response = app.test_client().post("/api/account/login", json={"username": username, "password": DEFAULT_PASSWORD})
    return {"Authorization": f"Bearer {response.get_json()['access']}"}


def config_version(app: Any) -> int | None:
    with app.app_context():
        return store.current_version()


def assert_problem(response: Any, status: int, field: str | None = None) -> dict:
    """A problem-details answer with `status`, a detail, and (if given) `field` among its errors."""
    assert response.status_code == status, response.get_json()
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["status"] == status and problem["detail"]
    if field is not None:
        assert field in problem["errors"], problem
    return problem


def assert_admin_only(client: Any, login: Any, method: str, path: str, body: Any) -> None:
    """No token and a bad token are 401 (with WWW-Authenticate), a viewer's token is 403."""
    call = getattr(client, method)
    missing = call(path, json=body)
    assert_problem(missing, 401)
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert_problem(call(path, json=body, headers={"Authorization": "Bearer not-a-jwt"}), 401)
    forbidden = assert_problem(call(path, json=body, headers=login("viewer")), 403)
    assert "admin role" in forbidden["detail"]
