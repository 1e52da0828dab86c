"""The console's route table (``/console``)."""

from __future__ import annotations

from relaygate.console import customer as c
from relaygate.console import operator as o
from relaygate.console import signin as s
from relaygate.console.routes import Route, Router
from relaygate.console.web import PREFIX as P

ROUTES: list[Route] = [
    Route("GET", P, s.home, "anyone"),
    Route("GET", f"{P}/sign-in", s.sign_in_form, "anyone"),
    Route("POST", f"{P}/sign-in", s.sign_in, "anyone"),
    Route("POST", f"{P}/sign-out", s.sign_out),
    Route("GET", f"{P}/setup/{{token}}", s.setup_form, "anyone"),
    Route("POST", f"{P}/setup/{{token}}", s.complete_setup, "anyone"),
    Route("POST", f"{P}/language", s.language, "anyone"),
    # a customer's pages (an admin adds ?account=)
    Route("GET", f"{P}/overview", c.overview, "member"),
    Route("GET", f"{P}/keys", c.keys_page, "member"),
    Route("POST", f"{P}/keys", c.create_key, "member"),
    Route("POST", f"{P}/keys/{{id}}", c.update_key, "member"),
    Route("POST", f"{P}/keys/{{id}}/revoke", c.revoke_key, "member"),
    Route("GET", f"{P}/usage", c.usage_page, "member"),
    Route("GET", f"{P}/usage.csv", c.usage_csv, "member"),
    Route("GET", f"{P}/requests", c.request_log, "member"),
    Route("GET", f"{P}/billing", c.billing, "member"),
    Route("POST", f"{P}/billing/redeem", c.redeem, "member"),
    # the operator's pages
    Route("GET", f"{P}/accounts", o.accounts_list, "admin"),
    Route("POST", f"{P}/accounts", o.create_account, "admin"),
    Route("GET", f"{P}/accounts/{{id}}", o.account_detail, "admin"),
    Route("POST", f"{P}/accounts/{{id}}/credits", o.top_up, "admin"),
    Route("POST", f"{P}/accounts/{{id}}/status", o.set_status, "admin"),
    Route("POST", f"{P}/accounts/{{id}}/members", o.add_member, "admin"),
    Route("GET", f"{P}/codes", o.codes_list, "admin"),
    Route("POST", f"{P}/codes", o.create_codes, "admin"),
    Route("GET", f"{P}/models", o.models_page, "admin"),
    Route("GET", f"{P}/upstreams", o.upstreams_page, "admin"),
    Route("GET", f"{P}/upstreams/table", o.upstreams_table, "admin"),
    Route("GET", f"{P}/tokens", o.tokens_list, "admin"),
    Route("POST", f"{P}/tokens", o.create_token, "admin"),
    Route("POST", f"{P}/tokens/{{id}}/revoke", o.revoke_token, "admin"),
    Route("GET", f"{P}/audit", o.audit_page, "admin"),
]

ROUTER = Router(ROUTES)
