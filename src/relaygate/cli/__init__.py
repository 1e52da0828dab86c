"""The ``relaygate`` command: one module per command group."""

from __future__ import annotations

import os

import click

from relaygate.cli.accounts import accounts
from relaygate.cli.admin_tokens import admin_token
from relaygate.cli.codes import codes
from relaygate.cli.common import global_config_option
from relaygate.cli.credits import credits
from relaygate.cli.db import db
from relaygate.cli.keys import keys
from relaygate.cli.serve import serve
from relaygate.cli.usage import usage
from relaygate.cli.users import users


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="relaygate")
@global_config_option
def main() -> None:
    """relaygate: an OpenAI-compatible LLM API gateway."""
    # Every file relaygate writes (database, ledger spill and journal, ...) is its operator's
    # alone: 0600, whatever umask it was started with. Worker processes inherit it.
    os.umask(0o077)


main.add_command(serve)
main.add_command(keys)
main.add_command(credits)
main.add_command(usage)
main.add_command(db)
main.add_command(accounts)
main.add_command(codes)
main.add_command(admin_token)
main.add_command(users)

__all__ = ["main"]
