"""The console's defences: headers, CSRF, cross-site writes, escaping, one account's member
kept out of another's pages, and static files' caching."""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources

import httpx

from tests.console.conftest import Console
from tests.console.support import User

PAGES = ("/console/sign-in", "/console/overview", "/console/accounts", "/console/no-such")


def test_every_answer_carries_the_security_headers(console: Console) -> None:
    for path in PAGES:
        response = console.admin.get(path)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
    page = console.admin.page("/console/accounts")
    assert re.search(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", page) is None
    assert " on" not in re.sub(r"<[^>]*(?:content|value|placeholder)=\"[^\"]*\"", "", page).split(
        "<body")[1].split(">")[0]


def test_a_write_without_the_csrf_token_is_refused_and_changes_nothing(console: Console) -> None:
    admin = console.admin
    before = admin.page("/console/accounts?q=csrf-victim")
    refused = admin.post("/console/accounts", {"name": "csrf-victim"}, csrf=False)
    assert refused.status_code == 403
    wrong = admin.post("/console/accounts", {"name": "csrf-victim", "csrf_token": "x" * 43},
                       csrf=False)
    assert wrong.status_code == 403
    assert admin.page("/console/accounts?q=csrf-victim") == before
    by_header = admin.client.post("/console/accounts", data={"name": "csrf-header"},
                                  headers={"x-csrf-token": admin.csrf, "hx-request": "true"})
    assert by_header.status_code == 303


def test_a_cross_site_write_is_refused(console: Console) -> None:
    response = console.admin.post("/console/accounts", {"name": "cross-site"},
                                  headers={"sec-fetch-site": "cross-site"})
    assert response.status_code == 403
    assert "No accounts match" in console.admin.page("/console/accounts?q=cross-site")


def test_names_are_escaped(console: Console) -> None:
    evil = '<script>alert("x")</script>'
    account = console.account(evil)
    member = console.member(account, "escape@example.com")
    try:
        member.post("/console/keys", {"name": evil})
        for user, path in ((console.admin, "/console/accounts"),
                           (console.admin, f"/console/accounts/{account}"),
                           (member, "/console/overview"), (member, "/console/keys"),
                           (member, "/console/billing")):
            page = user.page(path)
            assert evil not in page, path
            assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page, path
    finally:
        member.close()


def test_a_member_cannot_open_another_accounts_pages(console: Console) -> None:
    mine = console.account("Mine")
    theirs = console.account("Theirs")
    member = console.member(mine, "mine@example.com")
    other = console.member(theirs, "theirs@example.com")
    try:
        created = other.post("/console/keys", {"name": "their key"})
        their_key = re.findall(r"(key_[0-9a-f]{16})", created.text)[-1]
        assert member.get(f"/console/accounts/{theirs}").status_code == 403
        assert member.get("/console/accounts").status_code == 403
        assert member.get("/console/audit").status_code == 403
        for page in ("overview", "keys", "billing", "usage", "requests"):  # ?account= ignored
            text = member.page(f"/console/{page}?account={theirs}")
            assert "Mine" in text
            assert "Theirs" not in text
        revoke = member.post(f"/console/keys/{their_key}/revoke")
        assert revoke.status_code == 404
        assert "revoked" not in other.page("/console/keys").split("<tbody>")[-1]
        edit = member.post(f"/console/keys/{their_key}", {"name": "mine now"})
        assert edit.status_code == 404
    finally:
        member.close()
        other.close()


def test_static_files_are_versioned_and_cached(console: Console) -> None:
    page = console.admin.page("/console/accounts")
    for url in re.findall(r'(?:src|href)="(/console/static/[^"]+)"', page):
        assert "?v=" in url
        response = console.admin.get(url)
        assert response.status_code == 200
        assert "immutable" in response.headers["cache-control"]
        assert response.headers["x-content-type-options"] == "nosniff"
    assert console.admin.get("/console/static/../settings.py").status_code == 404
    assert console.admin.get("/console/static/nothing.js").status_code == 404


def test_the_vendored_files_match_their_manifest() -> None:
    vendor = resources.files("relaygate.console").joinpath("static/vendor")
    manifest = json.loads(vendor.joinpath("manifest.json").read_text())
    assert {entry["name"] for entry in manifest} == {"htmx.org", "uplot"}
    for entry in manifest:
        assert entry["version"]
        assert entry["source"].startswith("npm:")
        assert "Permission" in vendor.joinpath(entry["license_file"]).read_text()
        for name, digest in entry["files"].items():
            assert hashlib.sha256(vendor.joinpath(name).read_bytes()).hexdigest() == digest


def test_a_signed_out_cookie_opens_nothing(console: Console) -> None:
    account = console.account("Cookie")
    member = console.member(account, "cookie@example.com")
    cookies = dict(member.client.cookies)
    member.post("/console/sign-out")
    member.close()
    with httpx.Client(base_url=console.gateway.url, cookies=cookies) as client:
        response = client.get("/console/overview")
        assert response.status_code == 303
        assert "/console/sign-in" in response.headers["location"]
        write = client.post("/console/keys", data={"name": "late"})
        assert write.status_code == 303


def test_a_member_is_not_an_admin(console: Console) -> None:
    account = console.account("Not admin")
    member = console.member(account, "notadmin@example.com")
    try:
        for path in ("/console/codes", "/console/tokens", "/console/models",
                     "/console/upstreams"):
            assert member.get(path).status_code == 403, path
        assert member.post("/console/codes", {"count": "1", "amount_usd": "1"}).status_code == 403
    finally:
        member.close()


def test_user_objects_close(console: Console) -> None:
    user = User(console.gateway)
    user.close()


def test_templates_hold_no_inline_script_or_style() -> None:
    folder = resources.files("relaygate.console").joinpath("templates")
    names = [entry.name for entry in folder.iterdir() if entry.name.endswith(".html")]
    assert len(names) >= 17
    for name in names:
        text = folder.joinpath(name).read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            assert "src=" in tag or 'type="application/json"' in tag, (name, tag)
        assert re.search(r"\sstyle=", text) is None, name
        assert re.search(r"\son[a-z]+=", text) is None, name
        assert "|safe" not in text, name
