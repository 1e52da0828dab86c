"""The closest-model suggestion of a 404: difflib's answer, in bounded time (issue 11, item 6)."""

from __future__ import annotations

import difflib
import random
import string
from typing import Any

import pytest

from relaygate.routing import catalog as catalog_module
from relaygate.routing.catalog import SUGGEST_CANDIDATES, SUGGEST_CHARS, closest

MODELS = ["gpt-5.2", "gpt-5.5", "text-only", "unrouted", "relaygate-simulator"]


def test_the_suggestion_is_difflibs_for_short_names() -> None:
    rng = random.Random(11)
    alphabet = string.ascii_lowercase + string.digits + "-."
    for _ in range(500):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 30)))
        expected = difflib.get_close_matches(name, MODELS, n=1, cutoff=0.0)
        assert closest(name, MODELS) == expected[0], name


def test_no_candidates_no_suggestion() -> None:
    assert closest("gpt-5.5", []) is None


class SpyMatcher(difflib.SequenceMatcher[str]):
    seen: list[int] = []
    ratios = 0

    def set_seq1(self, a: Any) -> None:
        SpyMatcher.seen.append(len(a))
        super().set_seq1(a)

    def set_seq2(self, b: Any) -> None:
        SpyMatcher.seen.append(len(b))
        super().set_seq2(b)

    def ratio(self) -> float:
        SpyMatcher.ratios += 1
        return super().ratio()


def test_the_work_is_bounded_whatever_the_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_module.difflib, "SequenceMatcher", SpyMatcher)
    candidates = [f"model-{i}-" + "x" * 500 for i in range(5000)]
    assert closest("m" * 15_000_000, candidates) is not None
    assert max(SpyMatcher.seen) <= SUGGEST_CHARS
    assert SpyMatcher.ratios <= SUGGEST_CANDIDATES
