"""Anthropic's Messages API as a client dialect (``POST /v1/messages``): its request decoded
into the internal request, the one event stream rendered back as Anthropic's message and
stream events, and errors in Anthropic's shape."""
