from aivonx.api.service.resources import blp

__all__ = ["blp"]
