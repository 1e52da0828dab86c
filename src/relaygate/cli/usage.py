"""``relaygate usage``: requests, tokens by kind and cost, from the usage rollups."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from relaygate.accounting.prices import micros_to_usd
from relaygate.cli.common import config_option, fail, settings_or_exit, with_store
from relaygate.store.records import UsageSummary
from relaygate.store.sql import SqlStore
from relaygate.store.usage_sql import usage_by_key_and_model


@click.command()
@config_option
@click.option("--key", "key_id", default=None, help="Only this key's usage.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def usage(config: str | None, key_id: str | None, as_json: bool) -> None:
    """Show usage by key and model."""
    settings = settings_or_exit(config)

    async def work(store: SqlStore) -> list[UsageSummary] | None:
        if key_id is not None and await store.get_key(key_id) is None:
            return None
        return await usage_by_key_and_model(store, key_id)

    rows = with_store(settings, work)
    if rows is None:
        fail(f"no key with id {key_id} (relaygate keys list shows them)")
        return
    views = []
    for row in rows:
        view = asdict(row)
        view["cost_usd"] = str(micros_to_usd(view.pop("cost_micros")))
        views.append(view)
    total_requests = sum(r.requests for r in rows)
    total_cost = str(micros_to_usd(sum(r.cost_micros for r in rows)))
    if as_json:
        click.echo(json.dumps({"usage": views, "requests": total_requests, "cost_usd": total_cost}))
        return
    click.echo(
        f"{'key':22} {'model':22} {'requests':>8} {'prompt':>9} {'cached':>8}"
        f" {'output':>9} {'reasoning':>9} {'cost USD':>12}"
    )
    for v in views:
        click.echo(
            f"{v['key_id']:22} {v['model']:22} {v['requests']:>8} {v['prompt_tokens']:>9}"
            f" {v['cached_tokens']:>8} {v['completion_tokens']:>9} {v['reasoning_tokens']:>9}"
            f" {v['cost_usd']:>12}"
        )
    click.echo(f"total: {total_requests} requests, ${total_cost}")
