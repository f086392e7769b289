from aivonx.api.nodes.resources import blp

__all__ = ["blp"]
