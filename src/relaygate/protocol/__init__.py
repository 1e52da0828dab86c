"""Wire types of the contract, request validation, ids, and response/error rendering."""

from relaygate.protocol.ids import completion_id
from relaygate.protocol.render import error_body, sse_error, sse_event
from relaygate.protocol.types import ChatRequest
from relaygate.protocol.validate import decode_chat_request, images_of

__all__ = [
    "ChatRequest",
    "completion_id",
    "decode_chat_request",
    "error_body",
    "images_of",
    "sse_error",
    "sse_event",
]
