"""The retrieval + zero-shot web service (FastAPI) behind serve.py."""
