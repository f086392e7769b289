from aivonx.api.proxy_config.resources import blp

__all__ = ["blp"]
