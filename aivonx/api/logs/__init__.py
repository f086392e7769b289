from aivonx.api.logs.resources import blp

__all__ = ["blp"]
