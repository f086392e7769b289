"""/api/proxy/config: read, replace and patch the live settings."""

import pytest

from aivonx.runtime import get_runtime
from tests.integration.api.helpers import assert_problem, config_version

SETTINGS = {
    "strategy": "lowest_latency",
    "health_interval": 30.0,
    "standby_interval": 2.5,
    "probe_timeout": 4.0,
    "connect_timeout": 2.0,
    "first_byte_timeout": 120.0,
    "max_tries": 2,
    "models_max_age": 10.0,
    "forward_authorization": True,
    "require_api_key": False,
}


def test_get_shows_every_setting_with_its_version(client, login):
    response = client.get("/api/proxy/config", headers=login("viewer"))
    assert response.status_code == 200
    config = response.get_json()
    assert set(config) == set(SETTINGS) | {"version", "updated_at"}
    # The test profile's values (conftest) came from the AIVONX_* settings into the first row.
    assert (config["strategy"], config["standby_interval"], config["probe_timeout"]) == ("least_active", 0.5, 2.0)
    assert config["version"] >= 1 and config["updated_at"]


def test_put_replaces_every_setting_applied_live(app, client, login):
    before = client.get("/api/proxy/config", headers=login()).get_json()
    response = client.put("/api/proxy/config", json=SETTINGS, headers=login())
    assert response.status_code == 200
    config = response.get_json()
    assert {key: config[key] for key in SETTINGS} == SETTINGS
    assert config["version"] == before["version"] + 1 and config["updated_at"] > before["updated_at"]
    settings = get_runtime(app).manager.settings
    assert (settings.strategy, settings.max_tries, settings.forward_authorization) == ("lowest_latency", 2, True)
    assert settings.version == config["version"]
    assert client.get("/api/proxy/config", headers=login("viewer")).get_json() == config


def test_put_needs_every_setting(client, login):
    partial = {key: value for key, value in SETTINGS.items() if key not in ("max_tries", "require_api_key")}
    problem = assert_problem(client.put("/api/proxy/config", json=partial, headers=login()), 422)
    assert set(problem["errors"]) == {"max_tries", "require_api_key"}


def test_patch_changes_only_what_it_names(app, client, login):
    before = client.get("/api/proxy/config", headers=login()).get_json()
    response = client.patch("/api/proxy/config", json={"strategy": "round_robin", "max_tries": 5}, headers=login())
    assert response.status_code == 200
    config = response.get_json()
    assert (config["strategy"], config["max_tries"]) == ("round_robin", 5)
    assert config["probe_timeout"] == before["probe_timeout"] and config["version"] == before["version"] + 1
    assert get_runtime(app).manager.settings.strategy == "round_robin"
    # Nothing new, nothing stored: the version stays.
    for same in ({"strategy": "round_robin"}, {}):
        assert client.patch("/api/proxy/config", json=same, headers=login()).get_json()["version"] == config["version"]
    assert config_version(app) == config["version"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"strategy": "fastest"}, "strategy"),
        ({"strategy": None}, "strategy"),
        ({"health_interval": 0}, "health_interval"),
        ({"standby_interval": -1}, "standby_interval"),
        ({"health_interval": 10**6}, "health_interval"),
        ({"probe_timeout": "soon"}, "probe_timeout"),
        ({"connect_timeout": 0.0}, "connect_timeout"),
        ({"first_byte_timeout": 86_400}, "first_byte_timeout"),
        ({"max_tries": 0}, "max_tries"),
        ({"max_tries": 11}, "max_tries"),
        ({"max_tries": 2.5}, "max_tries"),
        ({"models_max_age": 0}, "models_max_age"),
        ({"forward_authorization": "perhaps"}, "forward_authorization"),
        ({"require_api_key": None}, "require_api_key"),
        ({"version": 99}, "version"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_settings_are_422_naming_the_field(app, client, login, body, field):
    before = config_version(app)
    assert_problem(client.patch("/api/proxy/config", json=body, headers=login()), 422, field)
    assert_problem(client.put("/api/proxy/config", json={**SETTINGS, **body}, headers=login()), 422, field)
    assert config_version(app) == before


def test_body_that_is_not_an_object_is_a_problem(client, login):
    response = client.patch("/api/proxy/config", json=["strategy"], headers=login())
    assert response.status_code == 422 and response.mimetype == "application/problem+json"


@pytest.mark.parametrize(("method", "body"), [("get", None), ("put", SETTINGS), ("patch", {"max_tries": 4})])
@pytest.mark.parametrize("authorization", [None, "Bearer not-a-jwt"])
def test_missing_or_bad_token_is_401(client, method, body, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    assert_problem(getattr(client, method)("/api/proxy/config", json=body, headers=headers), 401)


@pytest.mark.parametrize(("method", "body"), [("put", SETTINGS), ("patch", {"max_tries": 4})])
def test_viewer_cannot_change_settings(app, client, login, method, body):
    before = config_version(app)
    assert_problem(getattr(client, method)("/api/proxy/config", json=body, headers=login("viewer")), 403)
    assert config_version(app) == before


def test_a_second_process_applies_the_change_on_its_next_sync(client, login, make_app):
    other = get_runtime(make_app())
    other.sync()
    assert other.manager.settings.strategy == "least_active"
    client.patch("/api/proxy/config", json={"strategy": "lowest_latency", "first_byte_timeout": 9}, headers=login())
    assert other.sync() is True
    assert (other.manager.settings.strategy, other.manager.settings.first_byte_timeout) == ("lowest_latency", 9.0)
