"""A passed-through Responses answer, saying whether relaygate keeps it.

A Responses upstream is always asked not to store (relaygate keeps what is kept, and resolves
``previous_response_id`` itself), so its Response objects say ``"store": false``. The client is
told what relaygate does instead: :func:`stored_body` for a non-streamed body, and
:func:`stored_line` for a stream's ``data:`` line of an event that carries the Response object
(``response.created``, ``.in_progress``, ``.completed``, ...); every other event is relayed
untouched.

A Response object that already says the right thing is left as it came. Otherwise its one
``"store"`` member is changed in place in the bytes (or added first, when it has none and the
answer is stored), and the result is checked by decoding it again; bytes with more than one
``"store"`` (a tool's schema may name one) are decoded and encoded instead. An answer not kept
whose object says nothing of ``store`` is left saying nothing.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from relaygate.protocol.render import encoder


class _Stored(msgspec.Struct):
    store: Any = None


class _Carrier(msgspec.Struct):
    response: _Stored | None = None


_body_store = msgspec.json.Decoder(_Stored)
_event_store = msgspec.json.Decoder(_Carrier)
_any = msgspec.json.Decoder()
_STORE = re.compile(rb'"store"\s*:\s*(true|false|null)')
_OPENS = {False: re.compile(rb"\A\s*\{"), True: re.compile(rb'"response"\s*:\s*\{')}
"""Where the Response object opens: the body's first brace, an event's ``response`` member."""
_VALUE = {True: b"true", False: b"false"}


def _said(data: bytes, event: bool) -> Any:
    """What the Response object in ``data`` says of ``store`` (``None``: nothing, or not a
    Response object); raises on bytes that are not one."""
    if event:
        found = _event_store.decode(data).response
        return None if found is None else found.store
    return _body_store.decode(data).store


def _spliced(data: bytes, stored: bool, event: bool) -> bytes | None:
    """``data`` saying ``stored``, changed in place; ``None`` if that cannot be done for sure."""
    match = _STORE.search(data)
    if match is not None:
        if _STORE.search(data, match.end()) is not None:
            return None
        data = data[: match.start(1)] + _VALUE[stored] + data[match.end(1) :]
    else:
        opens = _OPENS[event].search(data)
        if opens is None:
            return None
        data = b'%s"store":%s,%s' % (data[: opens.end()], _VALUE[stored], data[opens.end() :])
    try:
        return data if _said(data, event) is stored else None
    except msgspec.MsgspecError:
        return None


def _reencoded(data: bytes, stored: bool, event: bool) -> bytes:
    decoded = _any.decode(data)
    response = decoded.get("response") if event and isinstance(decoded, dict) else decoded
    if not isinstance(response, dict):
        return data
    response["store"] = stored
    return encoder.encode(decoded)


def stored_json(data: bytes, stored: bool, event: bool) -> bytes:
    """``data`` (a Response object, or an ``event`` carrying one) saying ``store: stored``."""
    if not stored:
        match = _STORE.search(data)
        if match is None or (match[1] != b"true" and _STORE.search(data, match.end()) is None):
            return data  # says false (or nothing) wherever it says it
    try:
        said = _said(data, event)
        if said is stored or (said is None and not stored):
            return data
        return _spliced(data, stored, event) or _reencoded(data, stored, event)
    except msgspec.MsgspecError:
        return data  # not JSON: relayed as it came (the provider judges the upstream's bytes)


def stored_body(body: bytes, stored: bool) -> bytes:
    """A non-streamed Response body saying ``store: stored``."""
    return stored_json(body, stored, event=False)


def stored_line(line: bytes, stored: bool) -> bytes:
    """A stream's ``data:`` line, its event's Response object (if any) saying ``store:
    stored``."""
    payload = line[5:]
    changed = stored_json(payload, stored, event=True)
    return line if changed is payload else line[:5] + changed
