"""difystack's own settings read from the environment: one registry, never parsed as config.

``DIFYSTACK_<PATH>`` with ``__`` between levels sets a config key (``DIFYSTACK_DIFY__PORT``);
every name listed here configures the tool itself (where it keeps state, which login
``register`` uses, how the fakes behave) and is skipped by the config layer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

PREFIX = "DIFYSTACK_"


@dataclass(frozen=True)
class Setting:
    name: str
    help: str
    used_by: str
    secret: bool = False

    def read(self, env: Mapping[str, str] | None = None) -> str | None:
        """The value, or None when unset or empty."""
        value = (os.environ if env is None else env).get(self.name, "")
        return value or None


def _setting(name: str, help: str, used_by: str, *, secret: bool = False) -> Setting:
    setting = Setting(PREFIX + name, help, used_by, secret)
    REGISTRY[setting.name] = setting
    return setting


REGISTRY: dict[str, Setting] = {}

HOME = _setting("HOME", "where stacks keep their state (secrets, rendered project)", "every command")
CONFIG = _setting("CONFIG", "the stack file when --config is not given", "every command")
DIFY_ADMIN_PASSWORD = _setting(
    "DIFY_ADMIN_PASSWORD", "the admin password of a Dify set up elsewhere", "register", secret=True
)
DIFY_INIT_PASSWORD = _setting(
    "DIFY_INIT_PASSWORD", "the INIT_PASSWORD of a Dify set up elsewhere", "register", secret=True
)
XINFERENCE_USERNAME = _setting(
    "XINFERENCE_USERNAME", "the admin login of an Xinference with accounts on", "register, up (external)"
)
XINFERENCE_PASSWORD = _setting(
    "XINFERENCE_PASSWORD", "that admin's password", "register, up (external)", secret=True
)
XINFERENCE_TOKEN = _setting(
    "XINFERENCE_TOKEN",
    "an admin access token instead of username + password",
    "register, up (external)",
    secret=True,
)
XINFERENCE_API_KEY = _setting(
    "XINFERENCE_API_KEY",
    "the API key Dify gets (made with the admin login when unset)",
    "register, up (external)",
    secret=True,
)
XINFERENCE_SETUP_TOKEN = _setting(
    "XINFERENCE_SETUP_TOKEN",
    "the one-time setup token of an Xinference without an admin",
    "register, up (external)",
    secret=True,
)
STANDIN_BASE = _setting("STANDIN_BASE", "the image stand-ins are built FROM", "standins, tests")
STANDIN_PLUGIN_BASE = _setting(
    "STANDIN_PLUGIN_BASE", "the Python >= 3.12 image the real-plugin daemon is built FROM", "standins, tests"
)
STANDIN_TAG = _setting("STANDIN_TAG", "the tag of the stand-in images (default latest)", "standins, tests")
FAKE_HOST = _setting("FAKE_HOST", "address a fake server binds", "fakes")
FAKE_PORT = _setting("FAKE_PORT", "port a fake server listens on", "fakes")
FAKE_STARTUP_DELAY = _setting("FAKE_STARTUP_DELAY", "seconds before a fake opens its port", "fakes")
FAKE_READY_DELAY = _setting("FAKE_READY_DELAY", "seconds before a fake reports ready", "fakes")
FAKE_LAUNCH_LATENCY = _setting("FAKE_LAUNCH_LATENCY", "seconds a launch / install takes", "fakes")
FAKE_FAIL = _setting("FAKE_FAIL", "failures to inject, kind[:target],...", "fakes")
FAKE_STATE_DIR = _setting("FAKE_STATE_DIR", "where the fake Dify api keeps its state", "fakes")
FAKE_DIFY_VERSION = _setting("FAKE_DIFY_VERSION", "the Dify version the fake api plays", "fakes")
FAKE_DAEMON_VERSION = _setting(
    "FAKE_DAEMON_VERSION", "the plugin daemon version the fake daemon plays", "fakes"
)
FAKE_MARKETPLACE = _setting("FAKE_MARKETPLACE", "reachable | unreachable", "fakes")
FAKE_MARKETPLACE_PACKAGES = _setting(
    "FAKE_MARKETPLACE_PACKAGES", "the .difypkg files the fake Dify's simulated marketplace serves", "fakes"
)
FAKE_PLUGIN_ENVS = _setting(
    "FAKE_PLUGIN_ENVS", "where the fake plugin daemon finds the plugins' prebuilt environments", "fakes"
)
PLUGIN_PACKAGES = _setting(
    "PLUGIN_PACKAGES",
    "the .difypkg files the stand-in daemon runs and its marketplace serves",
    "standins, tests",
)
STUB_NAME = _setting("STUB_NAME", "the service a stub stands in for", "fakes")
STUB_PATHS = _setting("STUB_PATHS", "the paths a stub answers", "fakes")
CI_TOOLS = _setting("CI_TOOLS", "where CI provisioning installs its tools", "scripts/provision-docker")
CI_LOGS = _setting("CI_LOGS", "where CI provisioning writes its logs", "scripts/provision-docker")


def is_tool_setting(name: str) -> bool:
    return name in REGISTRY
