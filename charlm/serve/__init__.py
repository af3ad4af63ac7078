"""``charlm serve``: trained models kept loaded, behind an OpenAI-compatible API and a playground page.

``create_app(load_models(paths, ...))`` is the ASGI app; ``charlm serve`` runs it on uvicorn. Each
model has one engine (charlm/serve/engine.py) that batches every stream continuously.
"""

from charlm.serve.app import ServerSettings, create_app
from charlm.serve.models import load_models
from charlm.serve.protocol import Limits

__all__ = ["Limits", "ServerSettings", "create_app", "load_models"]
