"""`partner-kit` command line: local training, evaluation, federated join, prediction."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


@app.callback()
def main() -> None:
    """Train, evaluate, join a federation and predict with a partner's private model."""


if __name__ == "__main__":
    app()
