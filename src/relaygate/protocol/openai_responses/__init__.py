"""OpenAI's Responses API (``POST /v1/responses``) as a client dialect: its request decoded into
the one internal request, the one event stream rendered back as its object and its events."""
