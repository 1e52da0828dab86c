"""The web console at ``/console``: server-rendered Jinja2 pages, htmx for the interactions,
uPlot for the charts, every file shipped in this package (no CDN, no build step).

Modules: :mod:`~relaygate.console.web` (requests, answers, security headers),
:mod:`~relaygate.console.routes` (the router: sign-in, CSRF, errors),
:mod:`~relaygate.console.table` (the route table), :mod:`~relaygate.console.signin`,
:mod:`~relaygate.console.customer` and :mod:`~relaygate.console.operator` (the pages),
:mod:`~relaygate.console.charts`, :mod:`~relaygate.console.forms`,
:mod:`~relaygate.console.i18n`, :mod:`~relaygate.console.render` and
:mod:`~relaygate.console.assets`.
"""

from relaygate.console.web import PREFIX

__all__ = ["PREFIX", "billing_url", "prepare"]


def billing_url(base: str) -> str:
    """The console's billing page under ``base`` (the gateway's public URL)."""
    return f"{base.rstrip('/')}{PREFIX}/billing"


def prepare() -> None:
    """Load the static files and compile the catalogs at start-up, so that a broken catalog
    stops the start rather than failing a page later (templates compile on first use: all of
    them in every language would add most of a second to each start)."""
    from relaygate.console import assets, i18n

    assets.assets()
    for language in i18n.LANGUAGES:
        i18n.translations(language)
