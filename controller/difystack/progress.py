"""The live view of `difystack up`: phases, and one row per service/endpoint being waited for.

On a terminal it is a rich table refreshed in place; elsewhere (CI logs, pipes) every change
is one plain line, so logs stay readable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from difystack.waits import WaitStatus

STATE_STYLE = {
    "ready": "green",
    "waiting": "yellow",
    "failed": "red",
    "stalled": "red",
    "timeout": "red",
    "cancelled": "dim",
}


@dataclass
class PhaseTimer:
    phases: list[tuple[str, float]] = field(default_factory=list)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.phases.append((name, time.monotonic() - started))

    def summary(self) -> str:
        return ", ".join(f"{name} {seconds:.1f}s" for name, seconds in self.phases)


class WaitView:
    """Receives WaitStatus updates from many threads and shows them."""

    def __init__(self, console: Console, title: str) -> None:
        self.console = console
        self.title = title
        self.rows: dict[str, WaitStatus] = {}
        self._name_width = 28  # grows with the longest name seen, so later lines stay aligned
        self._lock = threading.Lock()
        self._live: Live | None = None

    def update(self, status: WaitStatus) -> None:
        with self._lock:
            self.rows[status.name] = status
            if self._live is not None:
                self._live.update(self._table())
            else:
                self._print_line(status)

    def _print_line(self, status: WaitStatus) -> None:
        style = STATE_STYLE.get(status.state, "")
        self._name_width = max(self._name_width, len(status.name))
        name = escape(status.name) + " " * (self._name_width - len(status.name))
        self.console.print(
            f"  {name} [{style}]{status.state:<9}[/] {status.elapsed:6.1f}s  {escape(status.detail)}",
            soft_wrap=True,
        )

    def _table(self) -> Table:
        table = Table(title=self.title, title_justify="left", expand=False, show_edge=False)
        table.add_column("service / endpoint")
        table.add_column("state")
        table.add_column("elapsed", justify="right")
        table.add_column("detail", overflow="fold")
        for name in sorted(self.rows):
            status = self.rows[name]
            style = STATE_STYLE.get(status.state, "")
            table.add_row(
                escape(name), f"[{style}]{status.state}[/]", f"{status.elapsed:.1f}s", escape(status.detail)
            )
        return table

    @contextmanager
    def live(self) -> Iterator[WaitView]:
        if not self.console.is_terminal:
            self.console.print(f"[bold]{escape(self.title)}[/]")
            yield self
            return
        with Live(self._table(), console=self.console, refresh_per_second=4, transient=False) as live:
            self._live = live
            stop = threading.Event()

            def tick() -> None:  # keeps the elapsed column moving between updates
                while not stop.wait(0.5):
                    with self._lock:
                        live.update(self._table())

            ticker = threading.Thread(target=tick, daemon=True)
            ticker.start()
            try:
                yield self
            finally:
                stop.set()
                ticker.join()
                self._live = None
