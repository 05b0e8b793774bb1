"""Knobs that let tests and benchmarks model slow or broken servers.

Every fake reads the same environment variables, so a stand-in container is configured
exactly like a process started by a test:

- ``DIFYSTACK_FAKE_STARTUP_DELAY``: seconds before the port opens (real servers keep the
  port closed while they start).
- ``DIFYSTACK_FAKE_READY_DELAY``: seconds after the port opens before the server reports
  itself ready (Xinference lists no worker yet, LocalAI's ``/readyz`` answers 503...).
- ``DIFYSTACK_FAKE_LAUNCH_LATENCY``: seconds a model launch / gallery install / plugin
  install takes.
- ``DIFYSTACK_FAKE_FAIL``: comma-separated failure injections, ``kind:target`` or ``kind``.
  Each fake documents the kinds it understands (e.g. ``launch:<model_name>``,
  ``install:<plugin_id>``, ``apply:<gallery id>``, ``never-ready``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from difystack import settings
from difystack.fakes.common.env import seconds

ENV_STARTUP_DELAY = settings.FAKE_STARTUP_DELAY.name
ENV_READY_DELAY = settings.FAKE_READY_DELAY.name
ENV_LAUNCH_LATENCY = settings.FAKE_LAUNCH_LATENCY.name
ENV_FAIL = settings.FAKE_FAIL.name


@dataclass(frozen=True)
class Behaviour:
    startup_delay: float = 0.0
    ready_delay: float = 0.0
    launch_latency: float = 0.0
    failures: frozenset[str] = field(default_factory=frozenset)

    def fails(self, kind: str, target: str | None = None) -> bool:
        """True when the failure ``kind`` (optionally for ``target``) was injected."""
        if kind in self.failures:
            return True
        return target is not None and f"{kind}:{target}" in self.failures

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Behaviour:
        env = os.environ if env is None else env
        failures = frozenset(item.strip() for item in env.get(ENV_FAIL, "").split(",") if item.strip())
        return cls(
            startup_delay=seconds(env, ENV_STARTUP_DELAY),
            ready_delay=seconds(env, ENV_READY_DELAY),
            launch_latency=seconds(env, ENV_LAUNCH_LATENCY),
            failures=failures,
        )
