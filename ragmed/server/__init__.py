"""Serve stage: the OpenAI-compatible HTTP API (protocol, app, routes)."""
