"""The admin pages' server side, through the app's test client with real CSRF tokens:
sign-in, roles, cookies, forms and their field errors, and the HTML error pages."""

import re

import pytest

from aivonx.models import ApiKey
from tests.conftest import DEFAULT_PASSWORD, create_user

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', html).group(1)


def field_errors(html: str) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for field, message in re.findall(r'class="error" data-field="([\w-]+)">([^<]*)<', html):
        errors.setdefault(field, []).append(message)
    return errors


def sign_in(client, username: str, password: str = DEFAULT_PASSWORD):
    token = csrf_of(client.get("/ui/login").text)
    return client.post("/ui/login", data={"csrf_token": token, "username": username, "password": password})


@pytest.fixture
def admin(app, client):
    create_user(app, "boss", "admin")
    assert sign_in(client, "boss").status_code == 302
    return client


def post_form(client, page: str, action: str, prefix: str = "", **data):
    """Post a form of `page` with the page's CSRF token (a prefixed form's token field is prefixed too)."""
    token_field = f"{prefix}-csrf_token" if prefix else "csrf_token"
    return client.post(action, data={token_field: csrf_of(client.get(page).text), **data})


def test_pages_need_sign_in_and_come_back_after(app, client):
    create_user(app, "boss", "admin")
    response = client.get("/ui/nodes")
    assert response.status_code == 302 and response.location == "/ui/login?next=/ui/nodes"
    token = csrf_of(client.get(response.location).text)
    signed_in = client.post(
        "/ui/login?next=/ui/nodes", data={"csrf_token": token, "username": "boss", "password": DEFAULT_PASSWORD}
    )
    assert signed_in.location == "/ui/nodes"
    assert client.get("/ui/nodes").status_code == 200


def test_sign_in_refuses_wrong_passwords_forged_forms_and_other_sites(app, client):
    create_user(app, "boss", "admin")
    wrong = sign_in(client, "boss", "wrong-password")
    assert wrong.status_code == 400 and "wrong username or password" in field_errors(wrong.text)["password"][0]
    forged = client.post("/ui/login", data={"username": "boss", "password": DEFAULT_PASSWORD})
    assert forged.status_code == 400 and "CSRF" in forged.text
    token = csrf_of(client.get("/ui/login").text)
    elsewhere = client.post(
        "/ui/login?next=https://evil.example/",
        data={"csrf_token": token, "username": "boss", "password": DEFAULT_PASSWORD},
    )
    assert elsewhere.location == "/ui/"


def test_session_cookie_is_httponly_and_secure_when_configured(make_app):
    for secure in (False, True):
        app = make_app(AIVONX_COOKIE_SECURE=secure)
        create_user(app, f"boss{secure}", "admin")
        client = app.test_client()
        response = sign_in(client, f"boss{secure}")
        cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert ("Secure" in cookie) is secure


def test_sign_out_and_a_password_change_end_the_session(app, admin):
    logout = post_form(admin, "/ui/", "/ui/logout")
    assert logout.location == "/ui/login"
    assert admin.get("/ui/").status_code == 302

    user_id = create_user(app, "alice", "viewer")
    alice = app.test_client()
    sign_in(alice, "alice")
    assert alice.get("/ui/").status_code == 200
    sign_in(admin, "boss")
    password = {f"p{user_id}-password": "a-new-password"}
    changed = post_form(admin, "/ui/users", f"/ui/users/{user_id}/password", f"p{user_id}", **password)
    assert changed.status_code == 302
    assert alice.get("/ui/").status_code == 302


def test_browsers_opening_root_go_to_the_pages_clients_do_not(client):
    assert client.get("/", headers={"Accept": BROWSER_ACCEPT}).location == "/ui/"
    for accept in ("*/*", "application/json", None):
        response = client.get("/", headers={"Accept": accept} if accept else {})
        assert response.status_code == 200 and response.text == "Ollama is running"
    assert client.head("/", headers={"Accept": BROWSER_ACCEPT}).status_code == 200


def test_viewers_read_but_do_not_change(app, client):
    create_user(app, "watcher", "viewer")
    sign_in(client, "watcher")
    nodes = client.get("/ui/nodes")
    assert nodes.status_code == 200 and 'id="add-node"' not in nodes.text
    settings = client.get("/ui/settings")
    assert settings.status_code == 200 and "Save settings" not in settings.text
    token = csrf_of(nodes.text)
    refused = client.post("/ui/nodes", data={"csrf_token": token, "base_url": "http://127.0.0.1:9"})
    assert refused.status_code == 403 and refused.mimetype == "text/html" and "admin role" in refused.text
    assert client.get("/ui/users").status_code == 403
    assert client.get("/ui/logs").status_code == 200


def test_node_forms_show_every_error_next_to_its_field(admin, fake_nodes):
    bad = post_form(admin, "/ui/nodes", "/ui/nodes", base_url="ftp://x", priority="abc", weight="0", max_concurrent="0")
    assert bad.status_code == 400
    errors = field_errors(bad.text)
    assert set(errors) == {"base_url", "priority", "weight"}

    node = fake_nodes(name="gpu1")
    added = post_form(
        admin, "/ui/nodes", "/ui/nodes", base_url=node.url, name="gpu1", priority="0", weight="1", max_concurrent="0",
        enabled="y",
    )  # fmt: skip
    assert added.status_code == 302
    assert "Node gpu1 added: active." in admin.get("/ui/nodes").text
    taken = post_form(
        admin, "/ui/nodes", "/ui/nodes", base_url="http://127.0.0.1:9", name="gpu1", priority="0", weight="1",
        max_concurrent="0",
    )  # fmt: skip
    assert taken.status_code == 400 and "exists already" in field_errors(taken.text)["name"][0]


def test_settings_form_switches_the_strategy(admin):
    page = admin.get("/ui/settings").text
    values = dict(re.findall(r'<input[^>]*id="(\w+)"[^>]*value="([^"]*)"', page))
    data = {name: values[name] for name in values if name != "csrf_token"}
    bad = post_form(admin, "/ui/settings", "/ui/settings", **{**data, "strategy": "random", "max_tries": "0"})
    assert bad.status_code == 400 and set(field_errors(bad.text)) == {"strategy", "max_tries"}
    good = post_form(admin, "/ui/settings", "/ui/settings", **{**data, "strategy": "round_robin"})
    assert good.status_code == 302
    assert '<option selected value="round_robin">' in admin.get("/ui/settings").text


def test_users_and_api_keys(app, admin):
    short = post_form(admin, "/ui/users", "/ui/users", username="carol", password="short", role="viewer")
    assert short.status_code == 400 and "password" in field_errors(short.text)
    created = post_form(admin, "/ui/users", "/ui/users", username="carol", password="long-enough-pw", role="viewer")
    assert created.status_code == 302 and "carol" in admin.get("/ui/users").text
    # The last admin can neither be demoted nor disabled: the message shows by the field.
    with app.app_context():
        from aivonx import accounts

        boss_id = next(user.id for user in accounts.list_users() if user.username == "boss")
    fields = {f"u{boss_id}-role": "viewer", f"u{boss_id}-active": "y"}
    demoted = post_form(admin, "/ui/users", f"/ui/users/{boss_id}", f"u{boss_id}", **fields)
    assert demoted.status_code == 400 and "last active admin" in field_errors(demoted.text)[f"u{boss_id}-role"][0]

    made = post_form(admin, "/ui/keys", "/ui/keys", name="open-webui")
    assert made.status_code == 201
    key = re.search(r'<code class="key">(aivonx_[^<]+)</code>', made.text).group(1)
    assert key not in admin.get("/ui/keys").text  # shown once
    with app.app_context():
        from aivonx.extensions import db

        key_id = db.session.scalars(db.select(ApiKey.id)).one()
    revoked = post_form(admin, "/ui/keys", f"/ui/keys/{key_id}/revoke")
    assert revoked.status_code == 302 and "revoked" in admin.get("/ui/keys").text


def test_scripts_get_a_token_only_with_the_page_csrf_token(admin):
    assert admin.post("/ui/token").status_code == 400
    token = csrf_of(admin.get("/ui/").text)
    answer = admin.post("/ui/token", headers={"X-CSRFToken": token})
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    state = admin.get("/api/proxy/state", headers={"Authorization": f"Bearer {answer.get_json()['access']}"})
    assert state.status_code == 200


def test_errors_on_pages_are_pages(admin):
    for path in ("/ui/nope", "/ui/nodes/12345"):
        response = admin.get(path)
        assert response.status_code == 404 and response.mimetype == "text/html" and "<h1>404" in response.text
    api = admin.get("/api/proxy/nodes/12345")
    assert api.mimetype == "application/problem+json"
