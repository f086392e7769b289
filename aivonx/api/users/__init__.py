from aivonx.api.users.resources import blp

__all__ = ["blp"]
