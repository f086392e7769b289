from flask_smorest import Blueprint

blp = Blueprint("api_keys", __name__, url_prefix="/api/keys", description="API keys for the Ollama and /v1 routes")
