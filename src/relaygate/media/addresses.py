"""Which addresses an image URL may reach: public ones, and what the operator allowed.

An address is refused when it, or an IPv4 address embedded in it (IPv4-mapped ``::ffff:a.b.c.d``,
NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo), is loopback, private, link-local, shared
(CGNAT ``100.64.0.0/10``), multicast, reserved, unspecified or otherwise not globally routable.
The operator's allow-list (``images.allow_internal``) lets chosen internal hosts through: host
names, addresses or networks, each optionally limited to one port.

Host strings are parsed the way a resolver would read them, so legacy numeric forms
(``2130706433``, ``0x7f.1``, ``017700000001``) are addresses too, never names.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_NUMERIC_V4 = re.compile(r"[0-9a-fA-FxX.]+")
_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address if a resolver would read it as one, else ``None``."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if text.endswith("."):  # an absolute name: "127.0.0.1." is still 127.0.0.1 to a resolver
        text = text[:-1]
    if _NUMERIC_V4.fullmatch(text) and any(c.isdigit() for c in text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def _v4_refusal(address: ipaddress.IPv4Address) -> str | None:
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address in _CGNAT:
        return "shared (CGNAT)"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "not globally routable"
    return None


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def _v6_refusal(address: ipaddress.IPv6Address) -> str | None:
    embedded = _embedded_v4(address)
    if embedded is not None:
        reason = _v4_refusal(embedded)
        if reason is not None:
            return f"{reason} (embedded in IPv6)"
        if address.ipv4_mapped is not None or address in _NAT64:
            return None  # reaches that public IPv4 address (NAT64 on an IPv6-only network)
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local or address.is_site_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address in _NAT64_LOCAL or address.teredo is not None:
        return "translation prefix"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "not globally routable"
    return None


def refusal_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public internet address, or ``None`` when it is one."""
    if isinstance(address, ipaddress.IPv4Address):
        return _v4_refusal(address)
    return _v6_refusal(address)


@dataclass(frozen=True, slots=True)
class AllowRule:
    """One ``allow_internal`` entry: a host name or a network, and optionally a port."""

    host: str | None
    network: IPNetwork | None
    port: int | None

    def matches(self, host: str, port: int, address: IPAddress | None) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host is not None:
            return self.host == normalise_host(host)
        return address is not None and self.network is not None and address in self.network


def normalise_host(host: str) -> str:
    return host.lower().rstrip(".")


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):
        end = entry.find("]")
        if end < 0:
            raise ValueError(f"{entry!r} has '[' without ']'")
        rest = entry[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{entry!r}: only ':PORT' may follow ']'")
        return entry[1:end], _port(entry, rest[1:]) if rest else None
    if entry.count(":") == 1:
        target, port = entry.split(":")
        return target, _port(entry, port)
    return entry, None


def _port(entry: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{entry!r} has an invalid port {text!r}")
    return int(text)


def parse_allow_rule(entry: str) -> AllowRule:
    """Read one ``allow_internal`` entry (raises ``ValueError`` naming the problem)."""
    target, port = _split_port(entry.strip())
    if not target:
        raise ValueError(f"{entry!r} names no host or network")
    try:
        network = ipaddress.ip_network(target, strict=False)
    except ValueError:
        pass
    else:
        return AllowRule(host=None, network=network, port=port)
    if "/" in target or literal_address(target) is not None:
        raise ValueError(f"{entry!r} is not a valid address or CIDR network")
    host = normalise_host(target)
    if not _HOST_NAME.fullmatch(host):
        raise ValueError(f"{entry!r} is not a host name, IP address or CIDR network")
    return AllowRule(host=host, network=None, port=port)


class AddressPolicy:
    """Public addresses, plus whatever the operator's allow-list names."""

    def __init__(self, allow: list[str] | tuple[str, ...] = ()) -> None:
        self.rules = tuple(parse_allow_rule(entry) for entry in allow)

    def allows_host(self, host: str, port: int) -> bool:
        """Whether an allow-list entry names this host (and port) by name."""
        return any(r.host is not None and r.matches(host, port, None) for r in self.rules)

    def refusal(self, host: str, port: int, address: IPAddress) -> str | None:
        """Why connecting to ``address`` (for ``host``:``port``) is refused, or ``None``."""
        if any(rule.matches(host, port, address) for rule in self.rules):
            return None
        return refusal_reason(address)


__all__ = [
    "AddressPolicy",
    "AllowRule",
    "IPAddress",
    "literal_address",
    "normalise_host",
    "parse_allow_rule",
    "refusal_reason",
]
