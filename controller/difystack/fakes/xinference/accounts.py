"""Account routes: the first-run setup (token printed at start), login for JWTs, refresh and
API-key management (``$XINFERENCE_HOME/auth/auth.db``, see :mod:`.auth`)."""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from difystack.fakes.common.http import json_body, json_object
from difystack.fakes.xinference.auth import AuthStore, caller
from difystack.fakes.xinference.errors import ApiError, missing_field
from difystack.fakes.xinference.state import XinferenceState

PASSWORD_MIN_LENGTH = 8


class AccountHandlers:
    def __init__(self, state: XinferenceState) -> None:
        self.state = state

    def _auth_store(self) -> AuthStore:
        if self.state.auth is None:
            raise ApiError(400, "Authentication is not enabled on this server.")
        return self.state.auth

    async def setup_status(self, _: Request) -> Response:
        needs_setup = self.state.auth is not None and not self.state.auth.has_account()
        return JSONResponse(
            {
                "needs_setup": needs_setup,
                "initialized": not needs_setup,
                "password_min_length": PASSWORD_MIN_LENGTH,
            }
        )

    async def setup(self, request: Request) -> Response:
        store = self._auth_store()
        body = await json_body(request)
        for name in ("setup_token", "username", "password"):
            if not isinstance(body, dict) or not isinstance(body.get(name), str):
                raise missing_field("body", name, body)
        assert isinstance(body, dict)
        if store.has_account():
            raise ApiError(403, "Setup already completed; an account already exists.")
        if not hmac.compare_digest(body["setup_token"], store.setup_token()):
            raise ApiError(403, "Invalid setup token.")
        if len(body["password"]) < PASSWORD_MIN_LENGTH:
            raise ApiError(400, f"Password must be at least {PASSWORD_MIN_LENGTH} characters")
        user_id = store.create_first_account(body["username"], body["password"])
        return JSONResponse({"id": user_id, "username": body["username"]}, status_code=201)

    async def login(self, request: Request) -> Response:
        store = self._auth_store()
        body = await json_body(request)
        if not isinstance(body, dict):
            form = parse_qs((await request.body()).decode("utf-8", "replace"))
            body = {key: values[0] for key, values in form.items()}
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise missing_field("body", "username" if not isinstance(username, str) else "password", body)
        if store.user_id(username, password) is None:
            raise ApiError(401, "Incorrect username or password", {"WWW-Authenticate": "Bearer"})
        return JSONResponse(self._tokens(store, username))

    def _tokens(self, store: AuthStore, username: str) -> dict[str, Any]:
        return {
            "access_token": store.issue_token(username, "access", self.state.token_minutes * 60),
            "refresh_token": store.issue_token(username, "refresh", 7 * 24 * 3600),
            "token_type": "bearer",
        }

    async def refresh(self, request: Request) -> Response:
        store = self._auth_store()
        body = await json_object(request) or {}
        username = store.token_subject(str(body.get("refresh_token", "")), "refresh")
        if username is None:
            raise ApiError(401, "Could not validate credentials", {"WWW-Authenticate": "Bearer"})
        return JSONResponse(self._tokens(store, username))

    async def create_key(self, request: Request) -> Response:
        store = self._auth_store()
        who = caller(self.state.auth, request)
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise missing_field("body", "name", body)
        user_id = store.user_id(who.username or "") or 0
        key = store.create_key(body["name"], user_id, body.get("expires_at"))
        return JSONResponse(key, status_code=201)

    async def list_keys(self, _: Request) -> Response:
        return JSONResponse(self._auth_store().list_keys())

    async def delete_key(self, request: Request) -> Response:
        raw_id = request.path_params["key_id"]
        if not raw_id.isdigit() or not self._auth_store().delete_key(int(raw_id)):
            raise ApiError(404, "API key not found")
        return JSONResponse(None)
