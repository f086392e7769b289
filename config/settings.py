"""Settings: defaults, `AIVONX_*` environment variables and the three profiles.

Every value is parsed and checked here, once, so a bad setting stops the process at start
with a message naming the variable instead of failing later on a request.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENVIRONMENTS = ("development", "production", "testing")
STRATEGIES = ("least_active", "lowest_latency", "round_robin")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _positive(kind: type[int] | type[float], *, zero: bool = False) -> Callable[[str, str], Any]:
    noun = "an integer" if kind is int else "a number"
    bound = "0 or more" if zero else "greater than 0"

    def parse(name: str, raw: str) -> Any:
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{name} must be {noun}, got {raw!r}") from None
        if value < 0 or (value == 0 and not zero):
            raise ConfigError(f"{name} must be {bound}, got {raw!r}")
        return value

    return parse


_positive_float = _positive(float)
_positive_int = _positive(int)
_non_negative_float = _positive(float, zero=True)
_non_negative_int = _positive(int, zero=True)


def _boolean(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _choice(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        if raw not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {raw!r}")
        return raw

    return parse


def _text(name: str, raw: str) -> str:
    return raw


def _node_urls(name: str, raw: str) -> list[str]:
    urls = [part.strip() for part in raw.split(",") if part.strip()]
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{name}: {url!r} is not an http(s) URL with a host")
    return urls


def _log_file(name: str, raw: str) -> str:
    """A path, or `off` (kept as "") for stderr only."""
    return "" if raw.strip().lower() == "off" else raw


def _redis_url(name: str, raw: str) -> str | None:
    if not raw:
        return None
    if urlsplit(raw).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{name} must be a redis://, rediss:// or unix:// URL, got {raw!r}")
    return raw


# variable -> (Flask config key, parser). The README lists every one of these.
ENV_SETTINGS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "AIVONX_ENV": ("AIVONX_ENV", _choice(ENVIRONMENTS)),
    "AIVONX_SECRET_KEY": ("SECRET_KEY", _text),
    "AIVONX_DATABASE_URL": ("SQLALCHEMY_DATABASE_URI", _text),
    "AIVONX_REDIS_URL": ("AIVONX_REDIS_URL", _redis_url),
    "AIVONX_REDIS_PREFIX": ("AIVONX_REDIS_PREFIX", _text),
    "AIVONX_NODES": ("AIVONX_NODES", _node_urls),
    "AIVONX_STRATEGY": ("AIVONX_STRATEGY", _choice(STRATEGIES)),
    "AIVONX_HEALTH_INTERVAL": ("AIVONX_HEALTH_INTERVAL", _positive_float),
    "AIVONX_STANDBY_INTERVAL": ("AIVONX_STANDBY_INTERVAL", _positive_float),
    "AIVONX_PROBE_TIMEOUT": ("AIVONX_PROBE_TIMEOUT", _positive_float),
    "AIVONX_CONNECT_TIMEOUT": ("AIVONX_CONNECT_TIMEOUT", _positive_float),
    "AIVONX_FIRST_BYTE_TIMEOUT": ("AIVONX_FIRST_BYTE_TIMEOUT", _positive_float),
    "AIVONX_MAX_TRIES": ("AIVONX_MAX_TRIES", _positive_int),
    "AIVONX_MODELS_MAX_AGE": ("AIVONX_MODELS_MAX_AGE", _positive_float),
    "AIVONX_SYNC_INTERVAL": ("AIVONX_SYNC_INTERVAL", _positive_float),
    "AIVONX_POOL_MAXSIZE": ("AIVONX_POOL_MAXSIZE", _positive_int),
    "AIVONX_EJECT_AFTER": ("AIVONX_EJECT_AFTER", _positive_int),
    "AIVONX_EJECTION_BASE": ("AIVONX_EJECTION_BASE", _non_negative_float),
    "AIVONX_EJECTION_MAX": ("AIVONX_EJECTION_MAX", _non_negative_float),
    "AIVONX_QUEUE_SIZE": ("AIVONX_QUEUE_SIZE", _non_negative_int),
    "AIVONX_QUEUE_TIMEOUT": ("AIVONX_QUEUE_TIMEOUT", _positive_float),
    "AIVONX_DRAIN_SECONDS": ("AIVONX_DRAIN_SECONDS", _non_negative_float),
    "AIVONX_MAX_BODY_BYTES": ("MAX_CONTENT_LENGTH", _positive_int),
    "AIVONX_FORWARD_AUTHORIZATION": ("AIVONX_FORWARD_AUTHORIZATION", _boolean),
    "AIVONX_REQUIRE_API_KEY": ("AIVONX_REQUIRE_API_KEY", _boolean),
    "AIVONX_ADMIN_USER": ("AIVONX_ADMIN_USER", _text),
    "AIVONX_ADMIN_PASSWORD": ("AIVONX_ADMIN_PASSWORD", _text),
    "AIVONX_ACCESS_TOKEN_MINUTES": ("AIVONX_ACCESS_TOKEN_MINUTES", _positive_int),
    "AIVONX_REFRESH_TOKEN_DAYS": ("AIVONX_REFRESH_TOKEN_DAYS", _positive_int),
    "AIVONX_LOG_LEVEL": ("AIVONX_LOG_LEVEL", _choice(("DEBUG", "INFO", "WARNING", "ERROR"))),
    "AIVONX_METRICS_TOKEN": ("AIVONX_METRICS_TOKEN", _text),
    "AIVONX_LOG_FILE": ("AIVONX_LOG_FILE", _log_file),
    "AIVONX_LOG_MAX_BYTES": ("AIVONX_LOG_MAX_BYTES", _positive_int),
    "AIVONX_LOG_BACKUPS": ("AIVONX_LOG_BACKUPS", _positive_int),
    "AIVONX_COOKIE_SECURE": ("AIVONX_COOKIE_SECURE", _boolean),
    "AIVONX_SESSION_HOURS": ("AIVONX_SESSION_HOURS", _positive_float),
}

# Seconds to reach PostgreSQL: a database host that drops packets must fail a management
# request (503) and a config sync quickly, not after the OS's TCP timeout of minutes.
DATABASE_CONNECT_TIMEOUT = 3

DEFAULTS: dict[str, Any] = {
    "AIVONX_ENV": "development",
    "SECRET_KEY": None,
    "SQLALCHEMY_DATABASE_URI": None,  # filled in with a SQLite file in the instance folder
    "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
    "AIVONX_REDIS_URL": None,
    "AIVONX_REDIS_PREFIX": "aivonx:",
    "AIVONX_NODES": [],
    "AIVONX_STRATEGY": "least_active",
    "AIVONX_HEALTH_INTERVAL": 60.0,
    "AIVONX_STANDBY_INTERVAL": 5.0,
    "AIVONX_PROBE_TIMEOUT": 5.0,
    "AIVONX_CONNECT_TIMEOUT": 3.0,
    "AIVONX_FIRST_BYTE_TIMEOUT": 300.0,
    "AIVONX_MAX_TRIES": 3,
    "AIVONX_MODELS_MAX_AGE": 30.0,
    "AIVONX_SYNC_INTERVAL": 1.0,
    "AIVONX_POOL_MAXSIZE": 256,
    "AIVONX_EJECT_AFTER": 1,
    "AIVONX_EJECTION_BASE": 5.0,
    "AIVONX_EJECTION_MAX": 300.0,
    "AIVONX_QUEUE_SIZE": 100,
    "AIVONX_QUEUE_TIMEOUT": 30.0,
    "AIVONX_DRAIN_SECONDS": 5.0,
    "MAX_CONTENT_LENGTH": 100 * 1024 * 1024,
    "AIVONX_FORWARD_AUTHORIZATION": False,
    "AIVONX_REQUIRE_API_KEY": False,
    "AIVONX_ADMIN_USER": "admin",
    "AIVONX_ADMIN_PASSWORD": None,
    "AIVONX_ACCESS_TOKEN_MINUTES": 15,
    "AIVONX_REFRESH_TOKEN_DAYS": 30,
    "AIVONX_LOG_LEVEL": "INFO",
    "AIVONX_METRICS_TOKEN": None,  # unset: /metrics answers without authentication
    "AIVONX_LOG_FILE": None,  # None: instance/logs/aivonx.log; "": no file
    "AIVONX_LOG_MAX_BYTES": 10 * 1024 * 1024,
    "AIVONX_LOG_BACKUPS": 5,
    "AIVONX_COOKIE_SECURE": False,
    "AIVONX_SESSION_HOURS": 12.0,
    "AIVONX_START_BACKGROUND": True,
}

PROFILES: dict[str, dict[str, Any]] = {
    "development": {},
    "production": {},
    # Tests that read logs name their own file; the others write none.
    "testing": {"TESTING": True, "AIVONX_START_BACKGROUND": False, "AIVONX_LOG_FILE": ""},
}


def from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    """Parse every `AIVONX_*` variable that is set (an empty value counts as unset)."""
    parsed: dict[str, Any] = {}
    for variable, (key, parse) in ENV_SETTINGS.items():
        raw = environ.get(variable)
        if raw is None or (raw == "" and variable != "AIVONX_REDIS_URL"):
            continue
        parsed[key] = parse(variable, raw)
    return parsed


def build_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    instance_path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Defaults, then the profile, then the environment, then explicit overrides (tests)."""
    env_values = from_environ(os.environ if environ is None else environ)
    overrides = dict(overrides or {})
    environment = overrides.get("AIVONX_ENV", env_values.get("AIVONX_ENV", "development"))
    if environment not in ENVIRONMENTS:
        raise ConfigError(f"AIVONX_ENV must be one of {', '.join(ENVIRONMENTS)}; got {environment!r}")

    settings = {**DEFAULTS, **PROFILES[environment], **env_values, **overrides}
    settings["AIVONX_ENV"] = environment

    if not settings["SECRET_KEY"]:
        if environment == "production":
            raise ConfigError("AIVONX_SECRET_KEY must be set in production (refusing to start)")
        # Development keeps a generated key in the instance folder, so every worker (and a
        # restart) signs tokens alike; tests get a fresh one per process.
        if environment == "development":
            settings["SECRET_KEY"] = instance_secret(Path(instance_path) / "secret_key")
        else:
            settings["SECRET_KEY"] = secrets.token_urlsafe(32)
    elif environment == "production" and len(settings["SECRET_KEY"]) < 16:
        raise ConfigError("AIVONX_SECRET_KEY must be at least 16 characters in production")

    if not settings["SQLALCHEMY_DATABASE_URI"]:
        database = Path(instance_path) / "aivonx.sqlite3"
        settings["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{database}"
    settings["SQLALCHEMY_DATABASE_URI"] = database_driver(settings["SQLALCHEMY_DATABASE_URI"])
    if settings["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        options = dict(settings["SQLALCHEMY_ENGINE_OPTIONS"])
        options["connect_args"] = {"connect_timeout": DATABASE_CONNECT_TIMEOUT, **options.get("connect_args", {})}
        settings["SQLALCHEMY_ENGINE_OPTIONS"] = options
    return settings


def instance_secret(path: Path) -> str:
    """The secret stored at `path`, created once (atomically, owner-only) if missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret_key.")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
            os.link(temporary, path)  # fails if another process won the race: keep theirs
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    secret = path.read_text().strip()
    if len(secret) < 16:
        raise ConfigError(f"{path} holds no usable secret; delete it or set AIVONX_SECRET_KEY")
    return secret


def database_driver(url: str) -> str:
    """Plain `postgres(ql)://` URLs use psycopg2 (made gevent-cooperative by psycogreen);
    SQLAlchemy 2.1 would otherwise pick psycopg 3."""
    scheme, separator, rest = url.partition("://")
    if separator and scheme in ("postgres", "postgresql"):
        return f"postgresql+psycopg2://{rest}"
    return url
