"""The graph with every default, bound at import: what `serve build serve_app.app:app` needs (it
takes a module-level application, not a builder). Serving reads serve_config.yaml instead."""

from avatar_core.config import AppConfig
from serve_app.builder import build_app

app = build_app(AppConfig())
