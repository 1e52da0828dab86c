"""Who is acting: the one value every admin action is authorised and audited by."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["admin", "member"]
"""``admin``: the operator, every account. ``member``: one account's owner."""

Via = Literal["admin_token", "session", "cli"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated actor of the admin API, the console or the CLI."""

    via: Via
    """How it authenticated: an admin token (scripts), a console session, or the CLI on the
    database's host."""
    id: str
    """The admin token's id, the user's id, or ``cli``."""
    role: Role
    account_id: str | None = None
    """A member's account (``None`` for an admin)."""
    address: str | None = None
    """The client's address (after the trusted proxy headers), for the audit log."""
    session_id: str | None = None
    """The session's public id when ``via == "session"`` (its writes need a CSRF token)."""

    @property
    def actor(self) -> str:
        """How the audit log names it: ``admin_token:ID``, ``user:ID`` or ``cli``."""
        if self.via == "admin_token":
            return f"admin_token:{self.id}"
        if self.via == "session":
            return f"user:{self.id}"
        return "cli"

    def may_see(self, account_id: str) -> bool:
        """An admin sees every account; a member only its own."""
        return self.role == "admin" or account_id == self.account_id
