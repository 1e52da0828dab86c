"""Templates: one Jinja2 environment per language (autoescape on for every template), the
filters the pages use, and :func:`render` that fills in what every page shows."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

import jinja2

from relaygate.console import assets, i18n
from relaygate.console.web import Page, Request

_LOADER = jinja2.PackageLoader("relaygate.console", "templates")


def _when(seconds: int | None) -> str:
    if seconds is None:
        return "—"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _when_ms(ms: int | None) -> str:
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@cache
def environment(locale: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=_LOADER,
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(i18n.translations(locale), newstyle=True)  # type: ignore[attr-defined]
    env.filters["money"] = lambda micros: "—" if micros is None else i18n.money(micros, locale)
    env.filters["number"] = lambda value: i18n.number(value, locale)
    env.filters["when"] = _when
    env.filters["when_ms"] = _when_ms
    env.globals["static"] = assets.url
    env.globals["languages"] = i18n.LANGUAGES
    return env


def render(request: Request, template: str, status: int = 200, **values: Any) -> Page:
    """A page of ``template`` with the signed-in user, CSRF token and language filled in."""
    env = environment(request.locale)
    body = env.get_template(template).render(
        principal=request.principal,
        csrf_token=request.csrf or "",
        locale=request.locale,
        path=request.path,
        query=request.query,
        **values,
    )
    return Page(body.encode(), status)
