"""Languages: complete catalogs, Accept-Language, the switcher's cookie."""

from __future__ import annotations

from importlib import resources

import pytest
from babel.messages.pofile import read_po

from relaygate.console import i18n
from tests.console.conftest import Console


def _catalog(name: str) -> list[tuple[str, str]]:
    path = resources.files("relaygate.console").joinpath(f"locale/{name}")
    with path.open("rb") as handle:
        return [(str(m.id), str(m.string)) for m in read_po(handle) if m.id]


@pytest.mark.parametrize("language", ["de", "ko"])
def test_every_message_is_translated(language: str) -> None:
    template = {msgid for msgid, _ in _catalog("messages.pot")}
    translated = dict(_catalog(f"{language}/LC_MESSAGES/messages.po"))
    assert template, "the template lists no messages"
    assert template <= set(translated), template - set(translated)
    assert all(translated[m] for m in template), [m for m in template if not translated[m]]
    for msgid in template:  # placeholders survive translation
        for name in ("%(count)s", "%(amount)s", "%(days)s", "%(s)s"):
            assert (name in msgid) == (name in translated[msgid]), msgid


@pytest.mark.parametrize(("header", "expected"), [
    (None, "en"), ("", "en"), ("de-CH,de;q=0.9,en;q=0.8", "de"), ("ko-KR", "ko"),
    ("fr,ko;q=0.5,de;q=0.4", "ko"), ("en;q=0.1,de;q=0.2", "de"), ("fr", "en"),
    ("de;q=nonsense", "en"), ("x" * 5000, "en"),
])  # fmt: skip
def test_accept_language(header: str | None, expected: str) -> None:
    assert i18n.from_accept_language(header) == expected


def test_the_cookie_beats_the_header() -> None:
    assert i18n.choose("ko", "de") == "ko"
    assert i18n.choose("xx", "de") == "de"


def test_money_is_written_the_locales_way() -> None:
    assert i18n.money(1_234_500_000, "en") == "$1,234.50"
    assert i18n.money(1_234_500_000, "de") == "1.234,50\xa0$"
    assert i18n.money(1_234, "en") == "$0.001234"


def test_pages_follow_accept_language_and_the_switcher(console: Console) -> None:
    admin = console.admin
    german = admin.get("/console/accounts", headers={"accept-language": "de-DE,de;q=0.9"})
    assert "Konten" in german.text
    assert '<html lang="de">' in german.text
    korean = admin.get("/console/accounts", headers={"accept-language": "ko"})
    assert "계정" in korean.text
    switched = admin.post("/console/language", {"language": "ko", "next": "/console/codes"})
    assert switched.status_code == 303
    assert switched.headers["location"] == "/console/codes"
    assert "relaygate_lang=ko" in switched.headers["set-cookie"]
    assert "교환 코드" in admin.get("/console/codes", headers={"accept-language": "de"}).text
    admin.post("/console/language", {"language": "en"})
    assert "Redemption codes" in admin.page("/console/codes")


@pytest.mark.parametrize("language", sorted(i18n.LANGUAGES))
def test_every_template_compiles_in_every_language(language: str) -> None:
    from relaygate.console import render

    environment = render.environment(language)
    names = environment.list_templates(extensions=["html"])
    assert len(names) >= 17
    for name in names:
        environment.get_template(name)
