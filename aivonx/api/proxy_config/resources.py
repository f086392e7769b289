from flask_smorest import Blueprint

blp = Blueprint("config", __name__, url_prefix="/api/proxy/config", description="Live proxy settings")
