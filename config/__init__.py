"""aivonx settings (see settings.py); the README lists every variable."""

from config.settings import ENV_SETTINGS, STRATEGIES, ConfigError, build_settings

__all__ = ["ENV_SETTINGS", "STRATEGIES", "ConfigError", "build_settings"]
