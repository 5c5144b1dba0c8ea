"""`data-prep` command line: key generation, preparation, reference hash, wide-table import."""

from __future__ import annotations

from pathlib import Path

import typer

from data_prep.console import console, friendly_errors
from data_prep.key import generate_key

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


@app.callback()
def main() -> None:
    """Prepare a partner's assay files for federated training."""


@app.command()
@friendly_errors
def keygen(
    out: Path = typer.Option(Path("secret.key"), "--out", help="Where to write the key (mode 0600)"),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing key"),
) -> None:
    """Create the partners' shared secret key. Share it among partners only, never with the operator."""
    generate_key(out, overwrite=force)
    console.print(f"wrote {out} (32 random bytes, mode 0600). Share it with the other partners only.")


if __name__ == "__main__":
    app()
