"""The data path: pools, selection, upstream calls and the Ollama/OpenAI routes.

Nothing in this package except `views.py` imports Flask or the database.
"""
