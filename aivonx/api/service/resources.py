from flask_smorest import Blueprint

blp = Blueprint("service", __name__, url_prefix="/api", description="Liveness, readiness and build information")
