"""The address policy: what is public, embedded IPv4 forms, numeric host forms, the allow-list."""

from __future__ import annotations

import ipaddress

import pytest

from relaygate.media.addresses import (
    AddressPolicy,
    literal_address,
    parse_allow_rule,
    refusal_reason,
)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fec0::1", "link-local"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("100.127.255.254", "shared (CGNAT)"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "private"),
        ("255.255.255.255", "private"),
        ("192.0.2.1", "private"),
        ("198.18.0.1", "private"),
        ("2001:db8::1", "private"),
        ("::ffff:127.0.0.1", "loopback (embedded in IPv6)"),
        ("::ffff:10.1.2.3", "private (embedded in IPv6)"),
        ("::ffff:169.254.169.254", "link-local (embedded in IPv6)"),
        ("64:ff9b::7f00:1", "loopback (embedded in IPv6)"),
        ("64:ff9b::a9fe:a9fe", "link-local (embedded in IPv6)"),
        ("64:ff9b:1::808:808", "translation prefix"),
        ("2002:7f00:1::", "loopback (embedded in IPv6)"),
        ("2002:a00:1::1", "private (embedded in IPv6)"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "private (embedded in IPv6)"),
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "translation prefix"),
        ("::127.0.0.1", "reserved"),
    ],
)
def test_refused_addresses(address: str, reason: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "address",
    ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808",
     "2002:808:808::1", "1.1.1.1"],
)
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("[::1]", "::1"),
        ("::ffff:7f00:1", "::ffff:127.0.0.1"),
        ("fe80::1%eth0", "fe80::1%eth0"),
    ],
)
def test_numeric_hosts_in_every_form_are_addresses(host: str, address: str) -> None:
    assert literal_address(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize(
    "host", ["example.com", "cafe", "deadbeef", "1.2.3.4.5", "a1", "localhost"]
)
def test_names_are_not_addresses(host: str) -> None:
    assert literal_address(host) is None


def test_the_allow_list_lets_exactly_its_entries_through() -> None:
    policy = AddressPolicy(["10.1.2.0/24", "127.0.0.1:9000", "[fd00::/8]:8443", "Images.Corp."])
    loopback = ipaddress.ip_address("127.0.0.1")
    assert policy.refusal("x", 9000, loopback) is None
    assert policy.refusal("x", 9001, loopback) == "loopback"
    assert policy.refusal("x", 80, ipaddress.ip_address("10.1.2.3")) is None
    assert policy.refusal("x", 80, ipaddress.ip_address("10.1.3.3")) == "private"
    assert policy.refusal("x", 8443, ipaddress.ip_address("fd00::5")) is None
    assert policy.refusal("x", 443, ipaddress.ip_address("fd00::5")) == "private"
    assert policy.refusal("images.corp", 80, loopback) is None
    assert policy.refusal("IMAGES.CORP.", 80, loopback) is None
    assert policy.refusal("other.corp", 80, loopback) == "loopback"
    assert policy.allows_host("images.corp", 1)
    assert not policy.allows_host("evil.images.corp", 1)


def test_an_ipv4_entry_does_not_allow_the_ipv4_mapped_form() -> None:
    policy = AddressPolicy(["127.0.0.1"])
    assert policy.refusal("x", 80, ipaddress.ip_address("::ffff:127.0.0.1")) is not None


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("", "names no host"),
        ("10.0.0.0/33", "not a valid address or CIDR network"),
        ("2130706433", "not a valid address or CIDR network"),
        ("host:0", "invalid port"),
        ("host:99999", "invalid port"),
        ("host:http", "invalid port"),
        ("[::1", "without ']'"),
        ("[::1]x", "only ':PORT'"),
        ("two words", "not a host name"),
        ("http://host/", "invalid port"),
        ("host/path", "not a valid address or CIDR network"),
        ("bad_end-.corp", "not a host name"),
    ],
)
def test_bad_allow_entries_are_named(entry: str, problem: str) -> None:
    with pytest.raises(ValueError, match=r"\S") as caught:
        parse_allow_rule(entry)
    assert problem in str(caught.value)
