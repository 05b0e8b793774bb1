"""Xinference >= 3 with its accounts on: difystack's admin and an API key for Dify.

The admin is created once, with the one-time setup token the server printed (the stack's own
Xinference) or the user gave (an external one); an API key for Dify is made with the admin's
token. Every later call of the Xinference part carries the admin's token (``use_token``).
"""

from __future__ import annotations

import re
import threading
from dataclasses import replace
from typing import Protocol

from difystack.clients.xinference import XinferenceClient
from difystack.reconcile.context import ConvergeContext
from difystack.reconcile.report import Action, StepFailed
from difystack.reconcile.server_part import Executors, apply_actions
from difystack.registration import Registration
from difystack.xinference_login import (
    API_KEY_SECRET,
    PASSWORD_SECRET,
    SETUP_TOKEN_SECRET,
    TOKEN_SECRET,
    USERNAME_SECRET,
)

XINFERENCE_AUTH = "xinference auth"
MISSING_XINFERENCE_LOGIN = (
    "Xinference has accounts on: give its admin login with --xinference-username/--xinference-password "
    "(DIFYSTACK_XINFERENCE_USERNAME/DIFYSTACK_XINFERENCE_PASSWORD), a token with --xinference-token "
    "(DIFYSTACK_XINFERENCE_TOKEN) or an API key with --xinference-api-key (DIFYSTACK_XINFERENCE_API_KEY)"
)
MISSING_XINFERENCE_SETUP_TOKEN = (
    "Xinference has accounts on but no admin yet: give the setup token its log printed with "
    "--xinference-setup-token (DIFYSTACK_XINFERENCE_SETUP_TOKEN)"
)
SETUP_TOKEN = re.compile(r"Setup token:\s*(\S+)")


class AccountsView(Protocol):
    """What the account diff reads: the live server, or a fresh one."""

    def accounts_on(self) -> bool: ...

    def needs_admin(self) -> bool: ...


class XinferenceAccounts:
    def __init__(self, context: ConvergeContext, client: XinferenceClient) -> None:
        self.context = context
        self.client = client
        self._on: bool | None = None
        self._token: str | None = None
        self._lock = threading.Lock()

    @property
    def bootstraps(self) -> bool:
        """The stack's own Xinference when asked for accounts; an external one always (whether
        its accounts are on is asked of the server)."""
        xinference = self.context.config.xinference
        return xinference.auth or xinference.external is not None

    @property
    def external(self) -> bool:
        return self.context.config.xinference.external is not None

    # -- the live view ---------------------------------------------------------------------------

    def accounts_on(self) -> bool:
        if self._on is None:
            self._on = self.bootstraps and self.client.auth_enabled()
        return self._on

    def needs_admin(self) -> bool:
        return bool(self.client.setup_status().get("needs_setup"))

    # -- diff and executors ----------------------------------------------------------------------

    def diff(self, view: AccountsView) -> list[Action]:
        if not self.bootstraps or not view.accounts_on():
            return []
        actions = []
        if view.needs_admin():
            actions.append(Action("xinference", "create-admin", "admin"))
        if not self.context.secrets.get(API_KEY_SECRET):
            actions.append(Action("xinference", "create-api-key", "for Dify"))
        return actions

    def executors(self) -> Executors[None]:
        return {"create-admin": self._create_admin, "create-api-key": self._create_api_key}

    def ensure(self) -> None:
        """The ``xinference auth`` step of ``up``: apply the account diff, then log in."""
        if not self.accounts_on():
            return
        apply_actions(self.executors(), None, self.diff(self))
        self.log_in()
        self.context.report(XINFERENCE_AUTH, "ready", "admin session and API key")

    def _create_admin(self, _: None, action: Action) -> None:
        secrets = self.context.secrets
        username = secrets.get(USERNAME_SECRET) or "admin"
        self.client.setup_admin(self._setup_token(), username, secrets.values[PASSWORD_SECRET])
        secrets.put(USERNAME_SECRET, username)
        self.context.log.add(action)

    def _create_api_key(self, _: None, action: Action) -> None:
        key = self.client.create_api_key(self.log_in(), f"difystack-{self.context.config.name}")
        self.context.secrets.put(API_KEY_SECRET, key)
        self.context.log.add(action)

    # -- the admin's session ---------------------------------------------------------------------

    def log_in(self) -> str:
        """Authorise every later call with the admin's token (given, or from logging in once)."""
        with self._lock:
            if self._token is None:
                self._token = self._admin_token()
                self.client.use_token(self._token)
            return self._token

    def _admin_token(self) -> str:
        secrets = self.context.secrets
        given = secrets.get(TOKEN_SECRET)
        if given:
            return given
        if self.external and not secrets.get(USERNAME_SECRET):
            api_key = secrets.get(API_KEY_SECRET)
            if api_key:
                return api_key
            raise StepFailed(XINFERENCE_AUTH, MISSING_XINFERENCE_LOGIN)
        username = secrets.get(USERNAME_SECRET) or "admin"
        return self.client.login(username, secrets.values[PASSWORD_SECRET])

    def _setup_token(self) -> str:
        if self.external:
            given = self.context.secrets.get(SETUP_TOKEN_SECRET)
            if not given:
                raise StepFailed(XINFERENCE_AUTH, MISSING_XINFERENCE_SETUP_TOKEN)
            return given
        logs = self.context.options.xinference_logs
        found = SETUP_TOKEN.findall(logs() if logs else "")
        if not found:
            raise StepFailed(
                XINFERENCE_AUTH,
                "Xinference needs its one-time setup token, which was not found in its log",
                hint="see `difystack logs xinference`, or set xinference.auth: false",
            )
        return str(found[-1])

    # -- what Dify is given ----------------------------------------------------------------------

    def with_api_key(self, registration: Registration) -> Registration:
        """An Xinference registration with the API key Dify must send (once there is one)."""
        key = self.context.secrets.get(API_KEY_SECRET)
        if registration.provider == "xinference" and self.bootstraps and key:
            return replace(registration, credentials={**registration.credentials, "api_key": key})
        return registration
