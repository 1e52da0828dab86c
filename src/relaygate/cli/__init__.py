"""The ``relaygate`` command: one module per command group."""

from __future__ import annotations

import click

from relaygate.cli.credits import credits
from relaygate.cli.db import db
from relaygate.cli.keys import keys
from relaygate.cli.serve import serve
from relaygate.cli.usage import usage


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="relaygate")
def main() -> None:
    """relaygate: an OpenAI-compatible LLM API gateway."""


main.add_command(serve)
main.add_command(keys)
main.add_command(credits)
main.add_command(usage)
main.add_command(db)

__all__ = ["main"]
