"""The one settings object, built once from the config file and ``RELAYGATE_*`` variables.

Nothing else in relaygate reads ``os.environ``: the CLI calls :func:`load_settings` and passes the
result to ``create_app()`` and to the commands.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import msgspec
import yaml

from relaygate.errors import ConfigError

_T = TypeVar("_T")
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]

DEFAULT_DATABASE_URL = "sqlite:///relaygate.db"
SIMULATOR_MODEL = "relaygate-simulator"


class Pricing(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """USD per one million tokens. ``cached_input`` defaults to ``input``."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None


class UpstreamSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One upstream serving a model."""

    provider: str
    """Provider name: ``openai`` (and OpenAI-compatible servers), ``azure``, ``anthropic``,
    ``gemini`` or ``simulator``."""
    base_url: str | None = None
    """The upstream API root, e.g. ``https://api.openai.com/v1``."""
    api_key: str | None = None
    """The upstream's key; ``${VAR}`` reads it from the environment. Never logged."""
    model: str | None = None
    """The upstream's own model name; defaults to the public name."""
    name: str | None = None
    """A label for logs, metrics, the ledger and the ``x-relaygate-upstream`` header."""
    connect_timeout: PositiveFloat = 10.0
    """Seconds to establish the connection."""
    read_timeout: PositiveFloat = 300.0
    """Seconds to wait for the next byte of an answer."""
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    """Provider-specific options (the simulator's latency, for example)."""
    priority: int = 0
    """Lower goes first: upstreams of a higher priority serve only when every one of a lower
    priority is failing or out of rotation."""
    weight: PositiveFloat = 1.0
    """Share of traffic among the upstreams of the same priority (weighted random)."""
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 1
    """Further attempts on this upstream after a connect error, 429 or 5xx (before the first
    byte of an answer), with exponential back-off and jitter, honouring ``Retry-After``."""
    health_window_seconds: PositiveFloat = 60.0
    """The sliding window of request outcomes the failure rate is taken over."""
    health_min_requests: PositiveInt = 5
    """Outcomes the window must hold before the upstream can be taken out of rotation."""
    health_failure_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    """Failure rate over the window at which the upstream is taken out of rotation."""
    health_cooldown_seconds: PositiveFloat = 30.0
    """Seconds out of rotation before one trial request probes the upstream again."""


class ModelSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One public model."""

    pricing: Pricing
    max_output_tokens: PositiveInt = 16384
    """The largest ``max_tokens`` a request may ask for; the reservation's default."""
    vision: bool = False
    """Whether ``image_url`` content parts are accepted."""
    upstreams: list[UpstreamSettings] = msgspec.field(default_factory=list)
    image_token_estimate: PositiveInt = 1445
    """Prompt tokens reserved for each image (not ``detail: "low"``, which is 85) until the
    upstream reports the real count; 1445 is the most OpenAI's tile formula gives an image."""
    fallbacks: list[str] = msgspec.field(default_factory=list)
    """Models tried, in order, when every upstream of this one fails (a request's own
    ``models`` array takes precedence)."""


class ImageSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Image inputs (``image_url`` parts): limits, fetching and forwarding."""

    max_bytes: PositiveInt = 10 * 1024 * 1024
    """Largest image accepted, in bytes (downloaded or base64-decoded); larger ones get 413."""
    max_images: PositiveInt = 16
    """Most ``image_url`` parts in one request; more get 400."""
    max_total_bytes: PositiveInt = 64 * 1024 * 1024
    """Most image bytes one request may bring in, all its images together; more gets 413."""
    connect_timeout: PositiveFloat = 5.0
    """Seconds to connect to the server of an image URL."""
    fetch_timeout: PositiveFloat = 15.0
    """Seconds for a whole image fetch (name lookup, redirects and download); a slower server
    gets 400, however steadily it trickles bytes."""
    max_redirects: Annotated[int, msgspec.Meta(ge=0, le=10)] = 3
    """Redirects followed per image URL; each hop is checked like the first URL."""
    allow_internal: list[str] = msgspec.field(default_factory=list)
    """Internal hosts that image URLs may reach although their addresses are not public: host
    names, IP addresses or CIDR networks, each with an optional port (``images.corp.example``,
    ``10.1.2.0/24``, ``127.0.0.1:9000``, ``[fd00::/8]:8443``). Empty (the default) refuses every
    loopback, private, link-local, shared, multicast and reserved address."""
    forward_urls: bool = False
    """Send checked http(s) image URLs to upstreams unchanged, to fetch themselves; when false,
    the bytes relaygate checked are sent inline as base64 ``data:`` URLs."""
    cache_bytes: Annotated[int, msgspec.Meta(ge=0)] = 64 * 1024 * 1024
    """Memory for fetched images, reused by URL and shared by content hash; 0 turns it off."""
    cache_seconds: PositiveFloat = 300.0
    """How long a fetched image is reused for the same URL."""

    def __post_init__(self) -> None:
        # Imported here: relaygate.media imports this module.
        from relaygate.media.addresses import parse_allow_rule

        for i, entry in enumerate(self.allow_internal):
            try:
                parse_allow_rule(entry)
            except ValueError as exc:
                raise ValueError(f"allow_internal[{i}]: {exc}") from None


class Settings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Everything relaygate is configured with."""

    database_url: str = DEFAULT_DATABASE_URL
    """``sqlite:///relaygate.db`` (the default) or ``postgresql://...``."""
    redis_url: str | None = None
    """Optional ``redis://...`` for limits shared across replicas."""
    log_level: str = "info"
    """``debug``, ``info``, ``warning`` or ``error``."""
    key_refresh_seconds: PositiveFloat = 0.5
    """How often the in-memory key cache picks up new, revoked and re-credited keys."""
    stream_keepalive_seconds: PositiveFloat = 10.0
    """Seconds between SSE comment keep-alives while a stream waits for its first token."""
    disconnect_drain_seconds: PositiveFloat = 30.0
    """After a client drops a stream, how long relaygate keeps reading the upstream for its
    usage before it cancels and charges what it received."""
    max_request_bytes: PositiveInt = 32 * 1024 * 1024
    """Largest request body accepted; larger ones get 413."""
    max_head_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 64 * 1024
    """Largest request line and headers together, in bytes; larger ones get 431 and a close."""
    head_timeout_seconds: PositiveFloat = 20.0
    """Seconds a client has to send a whole request head once it has begun; then 408 and a
    close."""
    body_timeout_seconds: PositiveFloat = 30.0
    """Seconds a request body may go without a byte arriving while it is awaited; then 408 and
    a close (the request ends as a client disconnect)."""
    send_timeout_seconds: PositiveFloat = 60.0
    """Seconds a response may wait on a client that does not read; then the connection is
    dropped and the request ends as a client disconnect (billed by the disconnect rule)."""
    max_connections: PositiveInt = 2048
    """Open client connections per process; one more is answered 503 (``Retry-After: 1``) and
    closed. Capped at start to what the process's open-file limit leaves room for."""
    max_body_bytes_in_flight: PositiveInt = 256 * 1024 * 1024
    """Request body bytes held per process by requests in flight (from before their bodies are
    read until they are answered); a request whose body would pass it gets 503 with
    ``Retry-After``. Bodies up to 64 KiB are not counted: the connection limit bounds them."""
    ledger_flush_seconds: PositiveFloat = 0.2
    """How often settled requests are written to the ledger."""
    ledger_batch_size: PositiveInt = 512
    """Most ledger rows written in one transaction."""
    ledger_max_pending: PositiveInt = 100_000
    """Unwritten ledger rows kept while the store is unreachable; past this, new requests get
    503 until it is back."""
    ledger_spill_path: str = "relaygate-ledger-spill.jsonl"
    """Where rows still unwritten at shutdown are saved; the next start writes them first."""
    redis_key_prefix: str = "relaygate"
    """Prefix of every Redis key relaygate uses (several deployments can share one Redis)."""
    redis_timeout_seconds: PositiveFloat = 5.0
    """Seconds to connect to Redis, or to wait for one command, before it counts as unreachable
    (credit admission then gets 503). Commands take microseconds; the margin is for a busy
    event loop, which delays reading an answer that has already arrived."""
    reservation_ttl_seconds: PositiveFloat = 3600.0
    """How long a credit reservation or concurrency slot held in Redis outlives a replica that
    died before settling it."""
    images: ImageSettings = msgspec.field(default_factory=ImageSettings)
    """Image inputs: size and count limits, fetching (SSRF-safe), caching and forwarding."""
    models: dict[str, ModelSettings] = msgspec.field(default_factory=dict)
    """The catalog: public model name to pricing, limits and upstreams."""


_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}")
_ENV_OVERRIDES = {
    "RELAYGATE_DATABASE_URL": "database_url",
    "RELAYGATE_REDIS_URL": "redis_url",
    "RELAYGATE_LOG_LEVEL": "log_level",
}
_LOG_LEVELS = {"debug", "info", "warning", "error"}
_DIGITS_LIMIT = 6


def _expand(value: Any, env: Mapping[str, str], path: str, source: str) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of the tree."""
    if isinstance(value, dict):
        return {
            k: _expand(v, env, f"{path}.{k}" if path else str(k), source) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_expand(v, env, f"{path}[{i}]", source) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name, has_default, default = match.group(1), match.group(2), match.group(3)
        if name in env:
            return env[name]
        if has_default is not None:
            return default or ""
        raise ConfigError(f"{source}: {path}: environment variable {name} is not set")

    return _ENV_PATTERN.sub(sub, value)


def _msgspec_path(error: msgspec.ValidationError) -> str:
    match = re.search(r"at `\$(.*)`", str(error))
    return match.group(1).lstrip(".") if match else ""


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


def _validate(settings: Settings, source: str) -> None:
    if settings.log_level not in _LOG_LEVELS:
        raise ConfigError(f"{source}: log_level: must be one of {sorted(_LOG_LEVELS)}")
    _check_url(settings.database_url, "database_url", source, {"sqlite", "postgresql"})
    if settings.redis_url is not None:
        _check_url(settings.redis_url, "redis_url", source, {"redis", "rediss", "unix"})
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
        for i, upstream in enumerate(model.upstreams):
            where = f"models.{name}.upstreams[{i}]"
            if upstream.base_url is not None:
                _check_url(upstream.base_url, f"{where}.base_url", source, {"http", "https"})


def _decimal_hook(type_: type, obj: Any) -> Any:
    if type_ is Decimal and isinstance(obj, (int, float, str)):
        try:
            return Decimal(str(obj))
        except InvalidOperation as exc:
            raise ValueError(f"not a number: {obj!r}") from exc
    raise NotImplementedError


def settings_from_mapping(data: Mapping[str, Any], source: str, env: Mapping[str, str]) -> Settings:
    """Build and check settings from an already-parsed mapping (the file's contents)."""
    expanded = _expand(dict(data), env, "", source)
    for var, key in _ENV_OVERRIDES.items():
        if var in env:
            expanded[key] = env[var]
    models = expanded.pop("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"{source}: models: must be a mapping of model name to settings")
    settings = _convert(expanded, Settings, "", source)
    settings = msgspec.structs.replace(
        settings,
        models={
            str(name): _convert(model, ModelSettings, f"models.{name}", source)
            for name, model in models.items()
        },
    )
    _validate(settings, source)
    return settings


def _convert(data: Any, type_: type[_T], prefix: str, source: str) -> _T:
    """``msgspec.convert`` with errors as one line naming the file and the key's full path."""
    try:
        return msgspec.convert(data, type_, dec_hook=_decimal_hook)
    except msgspec.ValidationError as exc:
        path = _msgspec_path(exc)
        where = ".".join(p for p in (prefix, path) if p).replace(".[", "[") or "(top level)"
        problem = str(exc).split(" - at ")[0]
        raise ConfigError(f"{source}: {where}: {problem}") from None


def default_catalog(env: Mapping[str, str]) -> dict[str, Any]:
    """The catalog used without a config file: contract models go to OpenAI when
    ``OPENAI_API_KEY`` is set, and the simulator model works with no key at all."""

    def openai_upstreams(model: str) -> list[dict[str, Any]]:
        if not env.get("OPENAI_API_KEY"):
            return []
        return [
            {
                "provider": "openai",
                "name": "openai",
                "base_url": env.get("OPENAI_BASE_URL", "https://api.openai.com/v1"),
                "api_key": env["OPENAI_API_KEY"],
                "model": model,
            }
        ]

    return {
        "gpt-5.2": {
            "pricing": {"input": "1.75", "cached_input": "0.175", "output": "14.0"},
            "max_output_tokens": 128000,
            "vision": True,
            "upstreams": openai_upstreams("gpt-5.2"),
        },
        "gpt-5.5": {
            "pricing": {"input": "5.0", "cached_input": "0.5", "output": "30.0"},
            "max_output_tokens": 128000,
            "vision": True,
            "upstreams": openai_upstreams("gpt-5.5"),
        },
        SIMULATOR_MODEL: {
            "pricing": {"input": "0.10", "cached_input": "0.01", "output": "0.40"},
            "max_output_tokens": 4096,
            "vision": True,
            "upstreams": [{"provider": "simulator", "name": "simulator"}],
        },
    }


def load_settings(path: str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the config file (``path``, else ``RELAYGATE_CONFIG``, else the built-in catalog)."""
    env = dict(os.environ) if env is None else env
    path = path or env.get("RELAYGATE_CONFIG") or None
    if path is None:
        return settings_from_mapping({"models": default_catalog(env)}, "(built-in defaults)", env)
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML or JSON: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of settings")
    return settings_from_mapping(data, source, env)
