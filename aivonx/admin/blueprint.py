"""The admin blueprint, on which auth.py and views.py register their routes."""

from flask import Blueprint

bp = Blueprint(
    "admin",
    __name__,
    url_prefix="/ui",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
