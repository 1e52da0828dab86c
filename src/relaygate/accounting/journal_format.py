"""The journal's records: how they are encoded, and read back at replay.

A file starts with a header record, ``H`` + a JSON object: the format ``version``, the names of
the fields of ``S`` records (``row``) and of ``O`` records (``admitted``), and ``store``, a
fingerprint of the database the rows belong to. Replay decodes each file by its own field lists
(a file written before a field was added or reordered still reads right), and leaves alone,
with an error in the log, a file of another store (two deployments sharing a directory, a
``database_url`` changed): its rows are never charged to the wrong database. A file with no
header (written before headers existed) is read with today's row fields and the admission
fields of that time (:data:`ADMITTED_FIELDS_V1`).

The version is not raised when a field is added: a header's field lists say how to read its
file, so a file this version writes (admissions with ``api``) is read right by the previous
version too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy.engine import make_url

from relaygate.store.records import LedgerRow

VERSION = 1
"""The journal format this code writes (and the newest it reads)."""

ROW_FIELDS = tuple(f.name for f in dataclasses.fields(LedgerRow))
ADMITTED_FIELDS_V1 = (
    "request_id",
    "key_id",
    "model",
    "created_at",
    "stream",
    "prompt_tokens",
    "cost_micros",
)
"""The fields of an admission (``O``) record before ``api`` was added: those of a file with no
header, and of the header of a file the previous version wrote."""
ADMITTED_FIELDS = (*ADMITTED_FIELDS_V1, "api")
"""The fields of an admission record: its interrupted row's ``api`` (``chat``, ``messages``,
``responses``) is the last."""

row_values = operator.attrgetter(*ROW_FIELDS)
"""A row's field values, in :data:`ROW_FIELDS` order (one C call)."""
_encoder = msgspec.json.Encoder()
encode = _encoder.encode
"""The journal's JSON encoder (built once)."""
encode_into = _encoder.encode_into
"""The same, into a reused buffer (no bytes object built per record)."""
_encode = encode
_decode_list = msgspec.json.Decoder(list[str | int | bool]).decode
_decode_admitted = msgspec.json.Decoder(tuple[str, str, str, int, bool, int, int, str]).decode
_decode_id = msgspec.json.Decoder(str).decode


class Header(msgspec.Struct, forbid_unknown_fields=False):
    version: int
    row: tuple[str, ...]
    admitted: tuple[str, ...]
    store: str


_decode_header = msgspec.json.Decoder(Header).decode


def store_fingerprint(database_url: str) -> str:
    """A short fingerprint of the database ``database_url`` names (its password left out; a
    SQLite path made absolute)."""
    url = make_url(database_url)._replace(password=None)  # set() ignores None
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        url = url.set(database=str(Path(url.database).resolve()))
    text = url.render_as_string(hide_password=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def header(store: str) -> bytes:
    """The first record of every file this code writes."""
    return (
        b"H"
        + _encode(
            {"version": VERSION, "row": ROW_FIELDS, "admitted": ADMITTED_FIELDS, "store": store}
        )
        + b"\n"
    )


def encode_row(row: LedgerRow) -> bytes:
    """A row as a JSON array of its fields, in their declared order (half the bytes, and half
    the encoding time, of an object)."""
    return _encode(row_values(row))


def encode_id(request_id: str) -> bytes:
    return _encode(request_id)


@dataclass(slots=True)
class Recovered:
    """What the journal files of earlier processes hold."""

    rows: list[LedgerRow] = field(default_factory=list)
    interrupted: int = 0
    """Rows of requests in flight at a crash (charged their prompt estimate)."""
    skipped: int = 0
    """Torn or unreadable records."""
    foreign: list[Path] = field(default_factory=list)
    """Files of another store (or a newer format), left in place."""
    files: list[tuple[int, Path]] = field(default_factory=list)
    """The files read (descriptor still locked, path), removed by :meth:`Journal.discard`."""
    lock: int = -1
    """The directory's recovery lock, held until :meth:`Journal.discard` or
    :meth:`Journal.release`: one process at a time replays the files of dead ones."""


@dataclass(slots=True)
class _Layout:
    row: tuple[str, ...] = ROW_FIELDS
    admitted: tuple[str, ...] = ADMITTED_FIELDS

    def decode_row(self, payload: bytes) -> LedgerRow:
        values = _decode_list(payload)
        if len(values) != len(self.row):
            raise msgspec.ValidationError(f"a ledger row has {len(self.row)} fields")
        if self.row == ROW_FIELDS:
            return LedgerRow(*values)  # type: ignore[arg-type]
        return msgspec.convert(dict(zip(self.row, values, strict=True)), LedgerRow)

    def interrupted(self, payload: bytes) -> LedgerRow:
        if self.admitted == ADMITTED_FIELDS:
            values: dict[str, Any] = dict(
                zip(ADMITTED_FIELDS, _decode_admitted(payload), strict=True)
            )
        else:
            listed = _decode_list(payload)
            if len(listed) != len(self.admitted):
                raise msgspec.ValidationError(f"an admission has {len(self.admitted)} fields")
            values = dict(zip(self.admitted, listed, strict=True))
        values.update(upstream="", upstream_model="", status="interrupted", latency_ms=0)
        return msgspec.convert(values, LedgerRow)


class Foreign(Exception):
    """A file this process must not replay (another store, a newer format)."""


def _layout(first: bytes, store: str) -> _Layout:
    """The layout a file's header gives (a file without one has today's)."""
    if not first.startswith(b"H"):
        return _Layout(admitted=ADMITTED_FIELDS_V1)
    try:
        found = _decode_header(first[1:])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Foreign(f"an unreadable header ({exc})") from None
    if found.version > VERSION:
        raise Foreign(f"format version {found.version} (this version reads up to {VERSION})")
    if found.store != store:
        raise Foreign(f"another store (fingerprint {found.store!r}, this one is {store!r})")
    return _Layout(found.row, found.admitted)


def read_records(
    data: bytes,
    store: str,
    recovered: Recovered,
    opened: dict[str, LedgerRow],
    settled: dict[str, LedgerRow],
    cancelled: set[str],
) -> None:
    """Add a file's records to ``opened``/``settled``/``cancelled``; raises :class:`Foreign`
    (having added nothing) if the file is not this store's. The zero bytes that end a
    segment's preallocated mapping are not a record."""
    lines = data.rstrip(b"\0").split(b"\n")
    layout = _layout(lines[0], store) if len(lines) > 1 else _Layout(admitted=ADMITTED_FIELDS_V1)
    if lines[-1]:
        recovered.skipped += 1  # the last record has no end: torn
    for line in lines[:-1]:
        if not line:
            continue
        kind, payload = line[:1], line[1:]
        try:
            if kind == b"S":
                row = layout.decode_row(payload)
                settled[row.request_id] = row
            elif kind == b"O":
                row = layout.interrupted(payload)
                opened[row.request_id] = row
            elif kind == b"C":
                cancelled.add(_decode_id(payload))
            elif kind != b"H":
                recovered.skipped += 1
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError):
            recovered.skipped += 1
