"""Run named tasks concurrently as soon as the tasks they depend on have succeeded.

A failed task fails every task that depends on it (with a message naming the cause) without
stopping independent ones: a LocalAI problem does not stop Xinference models from being
deployed and registered. ``limits`` caps how many tasks of one group run at once (e.g. the
launches a model server accepts in parallel).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class DependencyFailed(Exception):
    def __init__(self, task: str, dependency: str) -> None:
        super().__init__(f"skipped because {dependency} failed")
        self.task = task
        self.dependency = dependency


@dataclass
class Task:
    name: str
    run: Callable[[], Any]
    after: tuple[str, ...] = ()
    group: str | None = None


@dataclass
class TaskGraph:
    limits: dict[str, int] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    # Called when run() is interrupted (Ctrl-C): must unblock tasks waiting on outside events.
    on_interrupt: Callable[[], None] | None = None

    def add(
        self, name: str, run: Callable[[], Any], after: Iterable[str] = (), group: str | None = None
    ) -> str:
        if name in self.tasks:
            raise ValueError(f"duplicate task {name!r}")
        self.tasks[name] = Task(name, run, tuple(after), group)
        return name

    def run(self) -> dict[str, BaseException | None]:
        """Run everything; returns task -> None on success or the exception it ended with.

        One thread per task: a task blocks on its dependencies, so fewer threads could deadlock.
        """
        for task in self.tasks.values():
            missing = [dep for dep in task.after if dep not in self.tasks]
            if missing:
                raise ValueError(f"task {task.name!r} depends on unknown {missing}")
        semaphores = {group: threading.Semaphore(limit) for group, limit in self.limits.items()}
        futures: dict[str, Future[Any]] = {}
        results: dict[str, BaseException | None] = {}
        pool = ThreadPoolExecutor(max_workers=max(1, len(self.tasks)), thread_name_prefix="task")
        try:
            for name in self._ordered():
                futures[name] = pool.submit(self._run_one, self.tasks[name], futures, semaphores)
            for name, future in futures.items():
                results[name] = future.exception()
        except BaseException:
            if self.on_interrupt is not None:
                self.on_interrupt()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return results

    def _run_one(
        self, task: Task, futures: dict[str, Future[Any]], semaphores: dict[str, threading.Semaphore]
    ) -> Any:
        for dependency in task.after:
            if futures[dependency].exception() is not None:
                raise DependencyFailed(task.name, dependency)
        semaphore = semaphores.get(task.group or "")
        if semaphore is None:
            return task.run()
        with semaphore:
            return task.run()

    def _ordered(self) -> list[str]:
        """Dependencies before dependants (submission order matters: a worker blocks on deps)."""
        done: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in done:
                return
            if name in visiting:
                raise ValueError(f"dependency cycle through {name!r}")
            visiting.add(name)
            for dependency in self.tasks[name].after:
                visit(dependency)
            visiting.discard(name)
            done.append(name)

        for name in self.tasks:
            visit(name)
        return done
