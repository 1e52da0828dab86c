"""ASGI routes: chat completions, models, credits, health, metrics."""
