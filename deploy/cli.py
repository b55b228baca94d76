"""The `doorward` command. Other modules add their commands here (e.g. `app.add_typer(...)`)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.callback()
def main() -> None:
    """Doorward: run the stack and administer it."""
    # A callback keeps typer in multi-command mode even while `up` is the only command.


@app.command()
def up() -> None:
    """Run the whole stack in the foreground (configured by DOORWARD_* variables; Ctrl-C stops)."""
    from deploy.supervisor import run_up

    raise typer.Exit(run_up())
