from aivonx.api.api_keys.resources import blp

__all__ = ["blp"]
