"""The admin login of an Xinference started elsewhere, kept in the stack's secrets.

``register`` takes it from its options (which fall back to ``DIFYSTACK_XINFERENCE_*``); ``up``,
``plan`` and ``models`` on a stack with ``xinference.external`` take it from those variables.
A value once given stays in the secrets, so later commands need neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from difystack import settings
from difystack.secrets_store import SecretsStore

USERNAME_SECRET = "xinference_admin_username"
PASSWORD_SECRET = "xinference_admin_password"
TOKEN_SECRET = "xinference_admin_token"
API_KEY_SECRET = "xinference_api_key"
SETUP_TOKEN_SECRET = "xinference_setup_token"


@dataclass(frozen=True)
class XinferenceLogin:
    username: str | None = None
    password: str | None = None
    token: str | None = None
    api_key: str | None = None
    setup_token: str | None = None

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> XinferenceLogin:
        return cls(
            username=settings.XINFERENCE_USERNAME.read(env),
            password=settings.XINFERENCE_PASSWORD.read(env),
            token=settings.XINFERENCE_TOKEN.read(env),
            api_key=settings.XINFERENCE_API_KEY.read(env),
            setup_token=settings.XINFERENCE_SETUP_TOKEN.read(env),
        )

    def secrets(self) -> dict[str, str]:
        """The given values under their secret names (a password alone logs in as ``admin``)."""
        username = self.username or ("admin" if self.password else None)
        values = {
            USERNAME_SECRET: username,
            PASSWORD_SECRET: self.password,
            TOKEN_SECRET: self.token,
            API_KEY_SECRET: self.api_key,
            SETUP_TOKEN_SECRET: self.setup_token,
        }
        return {name: value for name, value in values.items() if value}

    def store(self, store: SecretsStore) -> None:
        given = self.secrets()
        if not given:
            return
        current = store.read()
        if all(current.get(name) == value for name, value in given.items()):
            return
        store.save({**current, **given})
