"""The checks a settings object must pass beyond its types: URLs, secrets, prices, references.

Each failure is a :class:`ConfigError` of one line naming the source and the key's full path.
"""

from __future__ import annotations

import re
from decimal import Decimal
from urllib.parse import urlsplit

from relaygate.errors import ConfigError
from relaygate.settings.models import MESSAGES_TOKEN_FIELDS, PRICE_CHANGING_FIELDS, ModelSettings
from relaygate.settings.root import Settings

_LOG_LEVELS = {"debug", "info", "warning", "error"}
_DIGITS_LIMIT = 6
_MIN_OPERATOR_TOKEN = 16
_MESSAGES_FIELD = re.compile(r"^[a-z][a-z0-9_]*$")


def validate(settings: Settings, source: str) -> None:
    """Raise :class:`ConfigError` for the first setting that is not acceptable."""
    if settings.log_level not in _LOG_LEVELS:
        raise ConfigError(f"{source}: log_level: must be one of {sorted(_LOG_LEVELS)}")
    _check_url(settings.database_url, "database_url", source, {"sqlite", "postgresql"})
    if settings.redis_url is not None:
        _check_url(settings.redis_url, "redis_url", source, {"redis", "rediss", "unix"})
    token = settings.operator_token
    if token is not None and (len(token) < _MIN_OPERATOR_TOKEN or token != token.strip()):
        raise ConfigError(
            f"{source}: operator_token: must be at least {_MIN_OPERATOR_TOKEN} characters,"
            " without surrounding spaces"
        )
    _check_alerts(settings, source)
    _check_cors(settings, source)
    _check_sign_in(settings, source)
    if settings.public_url is not None:
        _check_url(settings.public_url, "public_url", source, {"http", "https"})
    if settings.otel.endpoint is not None:
        _check_url(settings.otel.endpoint, "otel.endpoint", source, {"http", "https"})
    for name, model in settings.models.items():
        for i, fallback in enumerate(model.fallbacks):
            if fallback not in settings.models or fallback == name:
                raise ConfigError(
                    f"{source}: models.{name}.fallbacks[{i}]: {fallback!r} is not another model"
                    " of this config"
                )
        for field in ("input", "output", "cached_input"):
            price = getattr(model.pricing, field)
            if price is not None:
                _check_money(price, f"models.{name}.pricing.{field}", source)
        _check_price_fields(name, model, source)
        for i, upstream in enumerate(model.upstreams):
            where = f"models.{name}.upstreams[{i}]"
            if upstream.base_url is not None:
                _check_url(upstream.base_url, f"{where}.base_url", source, {"http", "https"})


def _check_url(url: str, where: str, source: str, schemes: set[str]) -> None:
    parts = urlsplit(url)
    if parts.scheme not in schemes or not (parts.netloc or parts.path):
        allowed = ", ".join(sorted(schemes))
        raise ConfigError(f"{source}: {where}: {url!r} is not a valid URL ({allowed})")


def _check_money(value: Decimal, where: str, source: str) -> None:
    exponent = value.as_tuple().exponent
    if not value.is_finite() or value < 0:
        raise ConfigError(f"{source}: {where}: price must be a non-negative number")
    if isinstance(exponent, int) and -exponent > _DIGITS_LIMIT:
        raise ConfigError(f"{source}: {where}: price has more than 6 decimal places")


def _check_alerts(settings: Settings, source: str) -> None:
    if settings.alert_webhook_url is None:
        return
    url = settings.alert_webhook_url
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise ConfigError(f"{source}: alert_webhook_url: {url!r} is not an http(s) URL")
    secret = settings.alert_webhook_secret
    if secret is None or len(secret) < _MIN_OPERATOR_TOKEN or secret != secret.strip():
        raise ConfigError(
            f"{source}: alert_webhook_secret: alerts are signed, so alert_webhook_url needs a"
            f" secret of at least {_MIN_OPERATOR_TOKEN} characters, without surrounding spaces"
        )


def _check_cors(settings: Settings, source: str) -> None:
    from relaygate.api.cors import check_origin  # imported here: relaygate.api imports this

    for i, origin in enumerate(settings.cors_allowed_origins):
        problem = check_origin(origin)
        if problem is not None:
            raise ConfigError(f"{source}: cors_allowed_origins[{i}]: {problem}")


TRUSTABLE_PROXY_HEADERS = ("x-forwarded-for", "x-forwarded-proto", "forwarded")
"""The proxy headers ``trusted_proxy_headers`` may name."""


def _check_sign_in(settings: Settings, source: str) -> None:
    import ipaddress

    for i, name in enumerate(settings.trusted_proxy_headers):
        if name.lower() not in TRUSTABLE_PROXY_HEADERS:
            raise ConfigError(
                f"{source}: trusted_proxy_headers[{i}]: {name!r} is not one of"
                f" {', '.join(TRUSTABLE_PROXY_HEADERS)}"
            )
    for i, entry in enumerate(settings.trusted_proxies):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"{source}: trusted_proxies[{i}]: {entry!r} is not an address or CIDR network"
            ) from None


def _check_price_fields(name: str, model: ModelSettings, source: str) -> None:
    for tier, multiplier in model.pricing.service_tiers.items():
        where = f"models.{name}.pricing.service_tiers.{tier}"
        _check_money(multiplier, where, source)
        if multiplier == 0:
            raise ConfigError(f"{source}: {where}: a multiplier must be greater than 0")
    for i, field in enumerate(model.allow_fields):
        if field in PRICE_CHANGING_FIELDS:
            continue
        if field in MESSAGES_TOKEN_FIELDS or not _MESSAGES_FIELD.match(field):
            raise ConfigError(
                f"{source}: models.{name}.allow_fields[{i}]: {field!r} is not a price-changing"
                f" field (one of {', '.join(PRICE_CHANGING_FIELDS)}, or a Messages server tool,"
                " top-level field, document_url or document_file)"
            )
