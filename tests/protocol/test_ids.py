"""Completion ids: the contract's form, unique, and never repeated across a fork."""

from __future__ import annotations

import os
import re

import pytest

from relaygate.protocol import ids
from relaygate.protocol.ids import completion_id

FORM = re.compile(r"chatcmpl-\d{14}\d{9}[A-Za-z0-9]{8}")


def test_ids_have_the_contracts_form_and_do_not_repeat() -> None:
    ids = [completion_id() for _ in range(5000)]  # many draws of the random pool
    assert all(FORM.fullmatch(i) for i in ids), ids[:3]
    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    completion_id()  # the parent's pool is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.write(write, completion_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    assert FORM.fullmatch(child)
    assert child[-17:] != completion_id()[-17:]


def test_an_ids_digits_and_letters_are_its_random_bits_in_base_10_then_62(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for raw, tail in (
        (bytes.fromhex("0123456789abcdef0123"), "685151011tWSl2KGb"),
        (b"\xff" * 10, "174706175BvFHOYrH"),
        (bytes(10), "000000000aaaaaaaa"),
    ):
        monkeypatch.setattr(ids, "_random_bytes", lambda raw=raw: raw)
        assert completion_id(1_700_000_000.0) == "chatcmpl-20231114221320" + tail
