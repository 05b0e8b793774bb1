"""Terminal output: one rich console for progress and results, one for errors."""

from __future__ import annotations

from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


def error(message: str, hint: str | None = None) -> None:
    err.print(f"[bold red]Error:[/] {message}", markup=True, soft_wrap=True)
    if hint:
        err.print(f"[yellow]Hint:[/] {hint}", markup=True, soft_wrap=True)
