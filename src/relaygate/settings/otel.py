"""OpenTelemetry traces of every model request, exported over OTLP/HTTP."""

from __future__ import annotations

from typing import Annotated

import msgspec


class OtelSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """OpenTelemetry traces (``pip install 'relaygate[otel]'``), exported over OTLP/HTTP."""

    enabled: bool = False
    """Trace every model request (a server span, with child spans for admission, images, each
    upstream attempt and settlement). Off (the default), nothing of OpenTelemetry is loaded."""
    endpoint: str | None = None
    """The OTLP/HTTP traces URL (``http://collector:4318/v1/traces``). Unset: the SDK's
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (plus
    ``/v1/traces``), else ``http://localhost:4318/v1/traces``."""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    """Headers sent with every export (a collector's credentials: ``${VAR}`` reads them from
    the environment). Empty: the SDK's ``OTEL_EXPORTER_OTLP_HEADERS``. Never logged."""
    service_name: str | None = None
    """The ``service.name`` of the spans. Unset: ``OTEL_SERVICE_NAME``, else ``relaygate``
    (``OTEL_RESOURCE_ATTRIBUTES`` adds attributes either way)."""
    sample_ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0
    """The share of requests traced (drawn per request); a request with a ``traceparent`` header
    follows its caller's sampling decision instead."""
