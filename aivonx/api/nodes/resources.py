from flask_smorest import Blueprint

blp = Blueprint("nodes", __name__, url_prefix="/api/proxy/nodes", description="Ollama nodes behind the proxy")
