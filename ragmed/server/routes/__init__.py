"""The API's routes, one module per OpenAI resource (plus health)."""
