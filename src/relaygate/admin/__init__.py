"""The JSON admin API under ``/admin/v1``: accounts, their keys and credits, redemption codes
and the audit log, for admin tokens and console sessions. It calls :mod:`relaygate.accounts`
and writes no SQL."""

from __future__ import annotations

from relaygate.admin.api import ROUTER, ROUTES
from relaygate.admin.routes import PREFIX

__all__ = ["PREFIX", "ROUTER", "ROUTES"]
