"""Streamed OpenAI text chunks passed through as bytes.

Most chunks of a streamed answer are plain text deltas of choice 0, and an OpenAI-compatible
server sends them byte for byte alike except for the text: the same id, created, model and
field order every time. Once one such chunk has been decoded, its bytes before and after the
text's JSON string literal are the stream's *template*. Every later line that is the template
around a simple string literal is the same chunk with other text, so it needs no decoding: the
literal is taken as it is and re-framed by the gateway's own chunk template (see
:class:`relaygate.providers.base.EncodedText`).

Only literals that are one valid JSON string are taken: no quote inside, no control character,
valid escapes (none for a surrogate), valid UTF-8. Anything else, and every line that does not
match, is decoded normally, so a malformed chunk fails as it always did. A server whose chunks
vary in other fields (OpenAI's per-chunk ``obfuscation`` padding, or llama.cpp's ``created``)
stops being learned after three tries and then costs one ``startswith`` per line.
"""

from __future__ import annotations

import re

import msgspec

_STRING = rb'"(?:[^"\\\x00-\x1f]++|\\[\\/bfnrt]|\\u(?![dD][89a-fA-F])[0-9a-fA-F]{4})++"'
"""A non-empty JSON string literal with no quote inside, escaped or not, and no escaped
surrogate (those are left to the decoder)."""
_STRINGS = re.compile(_STRING + rb"(?:\n" + _STRING + rb")*+")
"""One or more of them, each after the first on a line of its own."""
_PLAIN = rb'"[^"\\\x00-\x1f]++"'
_PLAIN_STRINGS = re.compile(_PLAIN + rb"(?:\n" + _PLAIN + rb")*+")
"""The common case of :data:`_STRINGS` (no escapes), matched in about half the time."""
_TRIES = 3
"""Templates learned per stream before giving up on a server whose chunks never repeat."""
_ESCAPED_BY_SOME = frozenset('"\\/<>&')
"""Characters some JSON encoders escape and others not (Go's escapes ``<>&``): a text with any
of them, or with non-ASCII, could be written differently by the upstream than found here."""
_encoder = msgspec.json.Encoder()


class TextTemplate:
    """The template of one stream's plain text chunks, once learned.

    A line of the template is ``head + literal + foot``: the stream loop takes its literal as
    ``line[start:len(line) - foot_length]`` once the line starts with ``head`` and ends with
    ``foot``, and checks a whole run of them with one call of :func:`valid`.
    """

    __slots__ = ("_tries", "foot", "foot_length", "head", "start")

    def __init__(self) -> None:
        self.head = b"\x00"  # matches no SSE line until learned
        self.foot = b""
        self.start = 0
        """Where the literal begins (the head's length)."""
        self.foot_length = 0
        self._tries = 0

    def learn(self, line: bytes, text: str) -> None:
        """Take ``line`` (a ``data:`` line decoded as a plain text delta of choice 0 carrying
        ``text``, and nothing else) as the template, if its literal can be found unambiguously."""
        if (
            self._tries >= _TRIES
            or not text.isascii()
            or not text.isprintable()
            or not _ESCAPED_BY_SOME.isdisjoint(text)
        ):
            return
        literal = _encoder.encode(text)
        start = line.find(literal)
        if start < 0 or line.find(literal, start + 1) >= 0:
            return
        end = start + len(literal)
        self._tries += 1
        self.head, self.foot = line[:start], line[end:]
        self.start, self.foot_length = start, len(line) - end

    def literal(self, line: bytes) -> bytes | None:
        """The text literal of ``line`` if it is the template around a simple string."""
        if not (line.startswith(self.head) and line.endswith(self.foot)):
            return None
        literal = line[self.start : len(line) - self.foot_length]
        return literal if valid([literal]) else None


def valid(literals: list[bytes]) -> bool:
    """Whether every one of ``literals`` (cut from lines, so holding no newline) is one simple
    JSON string in valid UTF-8: one regular-expression match for a whole run of them, the
    newlines that join them being what no literal may hold."""
    joined = b"\n".join(literals)
    if _PLAIN_STRINGS.fullmatch(joined) is None and _STRINGS.fullmatch(joined) is None:
        return False
    if not joined.isascii():
        try:
            joined.decode()
        except UnicodeDecodeError:
            return False
    return True
