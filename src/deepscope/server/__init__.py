"""The deepscope server: ``create_app(root)`` assembles one router per resource over the store readers."""

from .app import create_app

__all__ = ["create_app"]
