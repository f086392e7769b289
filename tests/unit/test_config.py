import pytest

from config import ConfigError, build_settings

INSTANCE = "/tmp/aivonx-test-instance"


def settings(env, **overrides):
    return build_settings(overrides, instance_path=INSTANCE, environ=env)


def test_defaults_are_the_embedded_mode(tmp_path):
    values = build_settings({}, instance_path=tmp_path, environ={})
    assert values["AIVONX_ENV"] == "development"
    assert values["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path}/aivonx.sqlite3"
    assert values["AIVONX_REDIS_URL"] is None
    assert values["AIVONX_HEALTH_INTERVAL"] == 60.0
    assert values["AIVONX_FIRST_BYTE_TIMEOUT"] >= 120
    assert len(values["SECRET_KEY"]) >= 32
    assert values["SECRET_KEY"] == (tmp_path / "secret_key").read_text()


def test_environment_variables_are_parsed():
    values = settings(
        {
            "AIVONX_NODES": "http://h1:11434, https://h2:11434/",
            "AIVONX_HEALTH_INTERVAL": "15",
            "AIVONX_REDIS_URL": "redis://localhost:6379/1",
            "AIVONX_DATABASE_URL": "postgres://u@db/aivonx",
            "AIVONX_FORWARD_AUTHORIZATION": "yes",
        }
    )
    assert values["AIVONX_NODES"] == ["http://h1:11434", "https://h2:11434/"]
    assert values["AIVONX_HEALTH_INTERVAL"] == 15.0
    assert values["AIVONX_REDIS_URL"] == "redis://localhost:6379/1"
    assert values["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg2://u@db/aivonx"
    assert values["AIVONX_FORWARD_AUTHORIZATION"] is True


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("AIVONX_HEALTH_INTERVAL", "soon", "AIVONX_HEALTH_INTERVAL must be a number"),
        ("AIVONX_HEALTH_INTERVAL", "0", "greater than 0"),
        ("AIVONX_MAX_TRIES", "2.5", "AIVONX_MAX_TRIES must be an integer"),
        ("AIVONX_NODES", "h1:11434", "not an http(s) URL"),
        ("AIVONX_STRATEGY", "random", "AIVONX_STRATEGY must be one of"),
        ("AIVONX_ENV", "staging", "AIVONX_ENV must be one of"),
        ("AIVONX_REDIS_URL", "localhost:6379", "AIVONX_REDIS_URL must be a redis://"),
        ("AIVONX_FORWARD_AUTHORIZATION", "maybe", "true or false"),
    ],
)
def test_bad_values_stop_the_start_naming_the_variable(variable, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings({variable: value})


def test_production_refuses_to_start_without_a_secret():
    with pytest.raises(ConfigError, match="AIVONX_SECRET_KEY must be set in production"):
        settings({"AIVONX_ENV": "production"})
    with pytest.raises(ConfigError, match="at least 16"):
        settings({"AIVONX_ENV": "production", "AIVONX_SECRET_KEY": "short"})
    assert settings({"AIVONX_ENV": "production", "AIVONX_SECRET_KEY": "x" * 40})["SECRET_KEY"] == "x" * 40


def test_test_overrides_win():
    assert settings({"AIVONX_HEALTH_INTERVAL": "15"}, AIVONX_HEALTH_INTERVAL=1.0)["AIVONX_HEALTH_INTERVAL"] == 1.0


def test_development_secret_is_generated_once_and_shared(tmp_path):
    first = build_settings({}, instance_path=tmp_path, environ={})["SECRET_KEY"]
    second = build_settings({}, instance_path=tmp_path, environ={})["SECRET_KEY"]
    assert first == second and len(first) >= 32
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    assert (
        build_settings({}, instance_path=tmp_path / "other", environ={"AIVONX_ENV": "testing"})["SECRET_KEY"] != first
    )
