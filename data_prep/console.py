"""Shared CLI plumbing: predictable mistakes become one clear message and exit code 2, never a traceback."""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from data_prep.errors import InputError

console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Wrap a CLI command so InputError (and a missing file) prints as `error: ...` with exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except FileNotFoundError as exc:
            console.print(f"[bold red]error:[/] file not found: {exc.filename}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except Exception as exc:
            if not disk_full(exc):
                raise
            where = f" while writing {exc.filename}" if getattr(exc, "filename", None) else ""
            console.print(f"[bold red]error:[/] the disk is full{where}: free space (or write --out / the cache "
                          "to a larger disk) and run the command again; files already written were written whole "
                          "(atomically)", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


def disk_full(exc: BaseException) -> bool:
    """ENOSPC / EDQUOT from the OS, or as safetensors reports it (its own error type, "os error 28")."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return type(exc).__name__ == "SafetensorError" and f"os error {errno.ENOSPC}" in str(exc)
