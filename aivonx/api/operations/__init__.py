from aivonx.api.operations.resources import blp

__all__ = ["blp"]
