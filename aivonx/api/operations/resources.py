from flask_smorest import Blueprint

blp = Blueprint("operations", __name__, url_prefix="/api/proxy", description="Runtime state and operations")
