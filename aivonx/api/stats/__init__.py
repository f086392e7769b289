from aivonx.api.stats.resources import blp

__all__ = ["blp"]
