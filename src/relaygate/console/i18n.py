"""The console's languages: gettext catalogs (Babel), chosen by cookie or ``Accept-Language``.

The ``.po`` files are the only form kept in the repository; they are compiled in memory at
start-up (:func:`relaygate.console.prepare`; two small catalogs: a few milliseconds).
Committing ``.mo`` files as well would keep two copies that can drift, and need a test that
they match; compiling at start needs only Babel, which the console uses anyway to format
numbers and money.
"""

from __future__ import annotations

import io
from decimal import Decimal
from functools import cache
from importlib import resources

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal
from babel.support import NullTranslations, Translations

LANGUAGES: dict[str, str] = {"en": "English", "de": "Deutsch", "ko": "한국어"}
"""The console's languages, each named in itself (the switcher's labels)."""
DEFAULT = "en"
COOKIE = "relaygate_lang"
MAX_ACCEPT_LANGUAGE = 512


def catalog_path(locale: str) -> str:
    return f"locale/{locale}/LC_MESSAGES/messages.po"


@cache
def translations(locale: str) -> NullTranslations:
    """The compiled catalog of ``locale`` (English: the messages themselves)."""
    if locale == DEFAULT or locale not in LANGUAGES:
        return NullTranslations()
    source = resources.files("relaygate.console").joinpath(catalog_path(locale))
    with source.open("rb") as handle:
        catalog = read_po(handle, locale=locale)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


def _weight(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def from_accept_language(value: str | None) -> str:
    """The best of :data:`LANGUAGES` for an ``Accept-Language`` header (q-values honoured;
    ``de-CH`` matches ``de``); English when none matches."""
    if not value:
        return DEFAULT
    best, best_q = DEFAULT, 0.0
    for position, item in enumerate(value[:MAX_ACCEPT_LANGUAGE].split(",")[:32]):
        tag, _, params = item.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            q = _weight(params.strip()[2:])
        language = tag.strip().lower().split("-")[0]
        rank = q - position * 1e-6  # equal weights: the earlier wins
        if language in LANGUAGES and rank > best_q:
            best, best_q = language, rank
    return best


def choose(cookie: str | None, accept_language: str | None) -> str:
    """The switcher's cookie when it names a language, else ``Accept-Language``."""
    if cookie in LANGUAGES:
        return str(cookie)
    return from_accept_language(accept_language)


def money(micros: int, locale: str) -> str:
    """Micro-USD as the locale writes dollars (``$1,234.50``, ``1.234,50 $``, ``US$1,234.50``);
    amounts under a cent keep their six places."""
    amount = Decimal(micros) / Decimal(1_000_000)
    if micros % 10_000:
        return format_currency(
            amount, "USD", locale=locale, format="¤#,##0.00####", currency_digits=False
        )
    return format_currency(amount, "USD", locale=locale)


def number(value: int, locale: str) -> str:
    return format_decimal(value, locale=locale)
