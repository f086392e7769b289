from aivonx.api.auth.resources import blp

__all__ = ["blp"]
