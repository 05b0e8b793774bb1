"""Client of Dify's console API (reference: dify-console-api.md §0-§6).

``difystack register`` talks to Difys started elsewhere, so behaviour follows the server's
version (``X-Version``), not the pinned 1.13.3:

* login: plain password before 1.11.1, base64 from it; tokens in the body and
  ``Authorization: Bearer`` before 1.9.2, HttpOnly cookies + ``X-CSRF-Token`` from it;
* plugins from 1.0 (provider ids ``langgenius/<name>/<name>``), built-in providers before;
* model credentials CRUD from 1.8; before it ``POST .../models`` saves one credential.

A login is never retried (five failures lock the account for a day). After a successful
login, a console call answered 401 triggers exactly one fresh login, then fails.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.cookiejar import Cookie
from typing import Any

import httpx

from difystack.clients.http import HttpClient, HttpError
from difystack.clients.results import UnexpectedAnswer, json_object, with_operation
from difystack.errors import DifystackError
from difystack.waits import Probe, WaitStrategy

Version = tuple[int, int, int]

CONSOLE = "/console/api"
WORKSPACE = f"{CONSOLE}/workspaces/current"
PLUGIN = f"{WORKSPACE}/plugin"

PLUGINS_SINCE: Version = (1, 0, 0)
CREDENTIALS_API_SINCE: Version = (1, 8, 0)
COOKIE_SESSION_SINCE: Version = (1, 9, 2)
BASE64_PASSWORD_SINCE: Version = (1, 11, 1)

CSRF_COOKIE = "csrf_token"
SESSION_COOKIES = ("access_token", "refresh_token", CSRF_COOKIE)
HOST_PREFIX = "__Host-"
SETUP_CODES = frozenset({"not_setup", "not_init_validated"})
PLUGIN_LIST_PAGE_SIZE = 256
UPLOAD_TIMEOUT = 180.0
HIDDEN_VALUE = "[__HIDDEN__]"  # what Dify shows (and accepts back) for a stored secret
# A credential call waits for the plugin's own validation: LocalAI's LLM check may take 3 x 60 s
# and Xinference's embedding check has no timeout of its own, so the bound is Dify's
# PLUGIN_DAEMON_TIMEOUT / the daemon's PLUGIN_MAX_EXECUTION_TIMEOUT (600 s) plus a margin.
CREDENTIAL_VALIDATION_TIMEOUT = 630.0
VERSION_PATTERN = re.compile(r"(\d+)\.(\d+)\.(\d+)")

PASSWORD_FIX = (
    "put the password this Dify's admin really has into the secrets file (key admin_password, see "
    "`difystack secrets path`), or reset it in the api container with `flask reset-password`"
)


class AlreadySetUp(DifystackError):
    """Dify's first-run setup is done already (403 already_setup)."""


class InitPasswordRejected(DifystackError):
    """``POST /console/api/init`` refused the INIT_PASSWORD."""


class DifyNotSetUp(DifystackError):
    """The console answers 401 not_setup / not_init_validated: run setup first."""


class LoginFailed(DifystackError):
    """Dify refused the admin's email or password (401 authentication_failed)."""


class LoginLocked(DifystackError):
    """Too many failed logins: Dify locks the account (429)."""


class NotSupportedByVersion(DifystackError):
    """The call does not exist (or silently does nothing) on this Dify version."""


class PluginInstallFailed(DifystackError):
    """A plugin install task failed; ``failures`` is [(plugin_id, message)]."""

    def __init__(self, message: str, failures: list[tuple[str, str]], task: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.failures = failures
        self.task = dict(task)


class CredentialsRejected(DifystackError):
    """Dify (its schema check or the plugin's validation) refused a model's credentials."""

    def __init__(self, provider: str, model: str, model_type: str, reason: str) -> None:
        super().__init__(
            f"Dify rejected the credentials of {model_type} model {model} ({provider}): {reason}"
        )
        self.provider = provider
        self.model = model
        self.model_type = model_type
        self.reason = reason


@dataclass(frozen=True)
class _Session:
    email: str
    password: str = field(repr=False)
    headers: dict[str, str] = field(repr=False)


def parse_version(text: str) -> Version | None:
    match = VERSION_PATTERN.search(text or "")
    if not match:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def error_code(exc: HttpError) -> str | None:
    """Dify's ``code`` field of an error body."""
    return str(exc.body.get("code")) if isinstance(exc.body, dict) and exc.body.get("code") else None


def require_string_credentials(credentials: Mapping[str, Any], model: str) -> dict[str, str]:
    """Dify stores credential values as strings only ("Variable X should be string")."""
    for key, value in credentials.items():
        if not isinstance(value, str):
            raise DifystackError(
                f"credential {key} of model {model} must be a string, got {type(value).__name__} "
                "(Dify refuses non-string values)"
            )
    return dict(credentials)


class DifyConsole(HttpClient):
    service = "dify"

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._version: Version | None = None
        self._session: _Session | None = None
        # Called with export_session() after every successful login, re-logins included, so a
        # caller that keeps the session between runs can store the fresh one.
        self.on_login: Callable[[dict[str, Any]], None] | None = None

    def __enter__(self) -> DifyConsole:
        return self

    # ---- version and capabilities ------------------------------------------------------------

    def version(self) -> Version:
        """The server's version, from ``X-Version`` of an unauthenticated call (cached)."""
        if self._version is None:
            response = self.request("GET", f"{CONSOLE}/setup", ok=(200, 401, 403, 404))
            self._note_version(response)
        if self._version is None:
            self._version = self._version_from_health()
        return self._version

    def _note_version(self, response: httpx.Response) -> None:
        if self._version is None:
            self._version = parse_version(response.headers.get("X-Version", ""))

    def _version_from_health(self) -> Version:
        # /health is on the api container itself (nginx does not route it).
        response = self.request("GET", "/health", ok=(200, 404))
        try:
            body = response.json() if response.status_code == 200 else None
        except ValueError:
            body = None  # nginx routes /health to the web UI
        found = parse_version(str(body.get("version", ""))) if isinstance(body, dict) else None
        if found is None:
            raise DifystackError(
                f"cannot tell which Dify version answers at {self.base_url}: no X-Version header",
                hint="is this the URL of Dify's nginx or api container?",
            )
        return found

    def has_plugins(self) -> bool:
        return self.version() >= PLUGINS_SINCE

    def uses_credentials_api(self) -> bool:
        return self.version() >= CREDENTIALS_API_SINCE

    def provider_id(self, short: str) -> str:
        """``xinference`` -> ``langgenius/xinference/xinference`` on 1.x, unchanged on 0.x."""
        if "/" in short or not self.has_plugins():
            return short
        return f"langgenius/{short}/{short}"

    def _require(self, since: Version, what: str) -> None:
        version = self.version()
        if version < since:
            raise NotSupportedByVersion(
                f"{what} needs Dify {_dotted(since)} or newer; this one is {_dotted(version)}"
            )

    # ---- setup ---------------------------------------------------------------------------------

    def setup_state(self) -> str:
        """``not_started`` or ``finished``."""
        response = self._public("read the Dify setup state", "GET", f"{CONSOLE}/setup")
        return str(json_object(response, "Dify setup state").get("step", ""))

    def init_required(self) -> bool:
        """Whether an INIT_PASSWORD gate must be passed (in this session) before setup."""
        response = self._public("read the Dify init state", "GET", f"{CONSOLE}/init", ok=(200, 404))
        if response.status_code == 404:  # servers older than the gate
            return False
        return json_object(response, "Dify init state").get("status") != "finished"

    def validate_init_password(self, password: str) -> None:
        """``POST /console/api/init``; the session cookie it sets is what ``/setup`` checks."""
        try:
            self.request("POST", f"{CONSOLE}/init", json={"password": password}, ok=(200, 201), retry=False)
        except HttpError as exc:
            code = error_code(exc)
            if code == "init_validate_failed":
                raise InitPasswordRejected(
                    f"Dify refused the INIT_PASSWORD: {exc.server_message}",
                    hint="use the INIT_PASSWORD the Dify api container was started with",
                ) from None
            if code == "already_setup":
                raise AlreadySetUp(f"Dify is set up already: {exc.server_message}") from None
            raise with_operation(exc, "Dify init-password check") from None

    def setup(
        self,
        email: str,
        name: str,
        password: str,
        language: str = "en-US",
        init_password: str | None = None,
    ) -> None:
        """Create the admin account and workspace (does not log in). The password goes in plain."""
        if self.init_required():
            if init_password is None:
                raise DifystackError(
                    "this Dify has an INIT_PASSWORD gate; setup needs the init password",
                    hint="pass the INIT_PASSWORD the api container was started with",
                )
            self.validate_init_password(init_password)
        body = {"email": email, "name": name, "password": password}
        if self.version() >= PLUGINS_SINCE:
            body["language"] = language
        try:
            self.request("POST", f"{CONSOLE}/setup", json=body, ok=(200, 201), retry=False)
        except HttpError as exc:
            code = error_code(exc)
            if code == "already_setup":
                raise AlreadySetUp(f"Dify is set up already: {exc.server_message}") from None
            if code == "not_init_validated":
                raise DifystackError(
                    f"Dify setup refused: {exc.server_message}", hint="pass the INIT_PASSWORD"
                ) from None
            raise with_operation(exc, f"Dify setup of admin {email}") from None

    # ---- login and session ----------------------------------------------------------------------

    def login(self, email: str, password: str) -> None:
        """Log in as the admin; later console calls carry the session. Never retried."""
        version = self.version()
        sent = base64.b64encode(password.encode()).decode() if version >= BASE64_PASSWORD_SINCE else password
        try:
            response = self.request(
                "POST",
                f"{CONSOLE}/login",
                json={"email": email, "password": sent, "remember_me": True},
                retry=False,
            )
        except HttpError as exc:
            raise self._login_error(exc, email) from None
        body = json_object(response, f"Dify login as {email}")
        if body.get("result") == "fail":
            raise DifystackError(f"Dify login as {email} failed: {body.get('data') or body.get('message')}")
        self._session = _Session(email, password, self._session_headers(body, version, email))
        if self.on_login is not None:
            self.on_login(self.export_session())

    def _login_error(self, exc: HttpError, email: str) -> DifystackError:
        code = error_code(exc)
        if exc.status == 401 and code in SETUP_CODES:
            return DifyNotSetUp(f"Dify at {self.base_url} is not set up yet: {exc.server_message}")
        if exc.status == 401 and "encrypted" in exc.server_message.lower():
            encoding = "base64" if self.version() >= BASE64_PASSWORD_SINCE else "plain text"
            return LoginFailed(
                f"Dify could not decode the password of {email} ({exc.server_message}); it was sent as "
                f"{encoding} because the server reports version {_dotted(self.version())}",
                hint="check that X-Version matches the Dify that answers (a proxy in between?)",
            )
        if exc.status == 401:
            return LoginFailed(
                f"Dify refused the login of {email} ({exc.server_message}): the stored admin password does "
                f"not match this Dify's admin account. To fix: {PASSWORD_FIX}. difystack does not retry, "
                "because Dify locks the account after 5 failed logins.",
                hint=PASSWORD_FIX,
            )
        if exc.status == 429:
            return LoginLocked(
                f"Dify locked the login of {email} after too many failed attempts ({exc.server_message})",
                hint="wait for the lock to expire (24 h) or clear it in Dify's Redis; then fix the password",
            )
        if exc.status == 403:
            return DifystackError(f"Dify refused the login of {email}: {exc.server_message}")
        return with_operation(exc, f"Dify login as {email}")

    def _session_headers(self, body: Mapping[str, Any], version: Version, email: str) -> dict[str, str]:
        data = body.get("data")
        token = data.get("access_token") if isinstance(data, dict) else data  # 0.x: a bare string
        csrf = self._adopt_session_cookies() if version >= COOKIE_SESSION_SINCE or not token else None
        if csrf:
            return {"X-CSRF-Token": csrf}
        if isinstance(token, str) and token:
            return {"Authorization": f"Bearer {token}"}
        raise UnexpectedAnswer(
            f"Dify login as {email} succeeded but gave neither a token nor a csrf_token cookie"
        )

    def _adopt_session_cookies(self) -> str | None:
        """The csrf token, after making the session cookies sendable over this connection.

        With https console URLs Dify names them ``__Host-*`` and marks them Secure; a client on
        plain http would never send Secure cookies back, so they are copied as non-Secure.
        """
        plain_http = self.base_url.startswith("http://")
        csrf = None
        for cookie in list(self.http.cookies.jar):
            base_name = cookie.name.removeprefix(HOST_PREFIX)
            if base_name not in SESSION_COOKIES or cookie.value is None:
                continue
            if cookie.secure and plain_http:
                self._set_plain_cookie(cookie)
            if base_name == CSRF_COOKIE:
                csrf = cookie.value
        return csrf

    def _set_plain_cookie(self, cookie: Cookie) -> None:
        self.http.cookies.jar.clear(cookie.domain, cookie.path, cookie.name)
        self.http.cookies.set(cookie.name, cookie.value or "", domain=cookie.domain, path=cookie.path)

    @property
    def logged_in(self) -> bool:
        return self._session is not None

    def export_session(self) -> dict[str, Any]:
        """The current session as JSON-able data (tokens: store it privately), for import_session."""
        if self._session is None:
            raise DifystackError("no Dify session to export (call login first)")
        cookies = [
            {"name": c.name, "value": c.value, "domain": c.domain, "path": c.path}
            for c in self.http.cookies.jar
            if c.name.removeprefix(HOST_PREFIX) in SESSION_COOKIES and c.value is not None
        ]
        return {"headers": dict(self._session.headers), "cookies": cookies}

    def import_session(self, saved: Mapping[str, Any], email: str, password: str) -> None:
        """Resume a session from export_session() without a login request.

        Never raises: whatever is unusable in ``saved`` is ignored, and if the session turns out
        to be expired the first console call answered 401 logs in again with these credentials.
        """
        headers = saved.get("headers")
        usable = {
            str(key): str(value)
            for key, value in (headers.items() if isinstance(headers, Mapping) else ())
            if key in ("X-CSRF-Token", "Authorization") and isinstance(value, str)
        }
        for cookie in saved.get("cookies") or ():
            if isinstance(cookie, Mapping) and all(isinstance(cookie.get(k), str) for k in ("name", "value")):
                self.http.cookies.set(
                    cookie["name"],
                    cookie["value"],
                    domain=str(cookie.get("domain") or ""),
                    path=str(cookie.get("path") or "/"),
                )
        self._session = _Session(email, password, usable)

    def _console(
        self, operation: str, method: str, path: str, *, ok: Iterable[int] = (200,), **kwargs: Any
    ) -> httpx.Response:
        """A call under ``@login_required``: session headers, one re-login on 401."""
        if self._session is None:
            raise DifystackError(f"{operation}: not logged in to Dify (call login first)")
        try:
            return self.request(method, path, ok=ok, headers=self._session.headers, **kwargs)
        except HttpError as exc:
            if exc.status != 401 or error_code(exc) in SETUP_CODES:
                raise with_operation(exc, operation) from None
        # The session expired or its cookies were lost: log in again once. The refused call did
        # nothing (auth runs first), so repeating it is safe even when it mutates.
        self.login(self._session.email, self._session.password)
        try:
            return self.request(method, path, ok=ok, headers=self._session.headers, **kwargs)
        except HttpError as exc:
            raise with_operation(exc, f"{operation} (after logging in again)") from None

    def call(
        self, operation: str, method: str, path: str, *, ok: Iterable[int] = (200,), **kwargs: Any
    ) -> httpx.Response:
        """A console call for another client of the same session (apps, knowledge bases)."""
        return self._console(operation, method, path, ok=ok, **kwargs)

    def _public(self, operation: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.request(method, path, **kwargs)
        except HttpError as exc:
            raise with_operation(exc, operation) from None
        self._note_version(response)
        return response

    # ---- plugins (1.x) ---------------------------------------------------------------------------

    def installed_plugins(self) -> dict[str, dict[str, Any]]:
        """plugin_id -> installation (``plugin_unique_identifier``, ``version``, ``installation_id``...)."""
        self._require(PLUGINS_SINCE, "listing plugins")
        plugins: dict[str, dict[str, Any]] = {}
        page = 1
        while True:
            params = {"page": page, "page_size": PLUGIN_LIST_PAGE_SIZE}
            response = self._console("list Dify plugins", "GET", f"{PLUGIN}/list", params=params)
            body = json_object(response, "list Dify plugins")
            items = [item for item in body.get("plugins") or [] if isinstance(item, dict)]
            plugins.update({str(item["plugin_id"]): item for item in items if "plugin_id" in item})
            total = body.get("total")
            if not isinstance(total, int) or not items or page * PLUGIN_LIST_PAGE_SIZE >= total:
                return plugins  # 1.0 answers one unpaginated list without "total"
            page += 1

    def latest_versions(self, plugin_ids: Iterable[str]) -> dict[str, str]:
        """plugin_id -> unique identifier of its newest marketplace version (unknown ones left out)."""
        self._require(PLUGINS_SINCE, "asking for plugin versions")
        response = self._console(
            "read the latest plugin versions",
            "POST",
            f"{PLUGIN}/list/latest-versions",
            json={"plugin_ids": list(plugin_ids)},
            retry=True,  # a read
        )
        versions = json_object(response, "latest plugin versions").get("versions") or {}
        return {
            str(plugin_id): str(entry["unique_identifier"])
            for plugin_id, entry in versions.items()
            if isinstance(entry, dict) and entry.get("unique_identifier")
        }

    def install_from_marketplace(self, identifiers: Iterable[str]) -> str | None:
        """Start installing marketplace packages; the task id, or None when all were installed."""
        return self._install("install plugins from the marketplace", "install/marketplace", identifiers)

    def upload_package(self, data: bytes, filename: str) -> str:
        """Upload a ``.difypkg`` (multipart field ``pkg``); returns its unique identifier."""
        self._require(PLUGINS_SINCE, "uploading a plugin")
        operation = f"upload plugin package {filename}"
        response = self._console(
            operation,
            "POST",
            f"{PLUGIN}/upload/pkg",
            files={"pkg": (filename, data, "application/octet-stream")},
            retry=True,  # the daemon stores packages by checksum: uploading twice is harmless
            timeout=UPLOAD_TIMEOUT,
        )
        identifier = json_object(response, operation).get("unique_identifier")
        if not isinstance(identifier, str) or not identifier:
            raise UnexpectedAnswer(f"{operation}: the answer has no unique_identifier")
        return identifier

    def install_packages(self, identifiers: Iterable[str]) -> str | None:
        """Install uploaded packages; the task id, or None when all were installed."""
        return self._install("install uploaded plugin packages", "install/pkg", identifiers)

    def _install(self, operation: str, route: str, identifiers: Iterable[str]) -> str | None:
        self._require(PLUGINS_SINCE, operation)
        wanted = list(identifiers)
        response = self._console(
            f"{operation} ({', '.join(wanted)})",
            "POST",
            f"{PLUGIN}/{route}",
            json={"plugin_unique_identifiers": wanted},
            retry=False,
        )
        body = json_object(response, operation)
        if body.get("all_installed"):
            return None
        task_id = body.get("task_id") or (body.get("task") or {}).get("id")
        if not task_id:
            raise UnexpectedAnswer(f"{operation}: the answer has no task id: {body}")
        return str(task_id)

    def task(self, task_id: str) -> dict[str, Any]:
        """An install task: ``status`` pending|running|success|failed and per-plugin entries."""
        operation = f"read plugin install task {task_id}"
        task = json_object(self._console(operation, "GET", f"{PLUGIN}/tasks/{task_id}"), operation).get(
            "task"
        )
        if not isinstance(task, dict):
            raise UnexpectedAnswer(f"{operation}: the answer has no task")
        return task

    # ---- model credentials ---------------------------------------------------------------------

    def _models_path(self, provider: str) -> str:
        return f"{WORKSPACE}/model-providers/{provider}/models"

    def model_credentials(self, provider: str, model: str, model_type: str) -> dict[str, Any] | None:
        """The model's credential record (current credentials, ``current_credential_id``,
        ``available_credentials``...); None when the model has no credential."""
        operation = f"read the credentials of {model_type} model {model} ({provider})"
        response = self._console(
            operation,
            "GET",
            f"{self._models_path(provider)}/credentials",
            params={"model": model, "model_type": model_type},
        )
        body = json_object(response, operation)
        if not (
            body.get("current_credential_id") or body.get("available_credentials") or body.get("credentials")
        ):
            return None
        return body

    def create_credential(
        self,
        provider: str,
        model: str,
        model_type: str,
        credentials: Mapping[str, str],
        name: str | None = None,
    ) -> None:
        """Add a credential (>= 1.8); the model's first one also adds the model and makes it active."""
        self._require(CREDENTIALS_API_SINCE, "the model-credential API")
        body = _credential_body(model, model_type, credentials, name)
        operation = f"add a credential to {model_type} model {model} ({provider})"
        path = f"{self._models_path(provider)}/credentials"

        def stored() -> bool:
            record = self.model_credentials(provider, model, model_type) or {}
            names = [c.get("credential_name") for c in record.get("available_credentials") or []]
            return name in names if name else bool(record)

        self._credential_call(operation, provider, "POST", path, body, ok=(200, 201), stored=stored)

    def update_credential(
        self,
        provider: str,
        model: str,
        model_type: str,
        credential_id: str,
        credentials: Mapping[str, str],
        name: str | None = None,
    ) -> None:
        """Replace a credential's values (a secret sent as ``[__HIDDEN__]`` keeps its stored value)."""
        self._require(CREDENTIALS_API_SINCE, "the model-credential API")
        body = _credential_body(model, model_type, credentials, name, credential_id=credential_id)
        operation = f"update credential {credential_id} of {model_type} model {model} ({provider})"
        path = f"{self._models_path(provider)}/credentials"

        def stored() -> bool:
            record = self.model_credentials(provider, model, model_type) or {}
            current = record.get("credentials") or {}
            visible = {k: v for k, v in credentials.items() if v != HIDDEN_VALUE and k != "api_key"}
            return all(current.get(k) == v for k, v in visible.items())

        self._credential_call(operation, provider, "PUT", path, body, retry=True, stored=stored)

    def switch_credential(self, provider: str, model: str, model_type: str, credential_id: str) -> None:
        """Make a credential the model's active one (creates the model record when missing)."""
        self._require(CREDENTIALS_API_SINCE, "the model-credential API")
        body = {"model": model, "model_type": model_type, "credential_id": credential_id}
        operation = f"switch {model_type} model {model} ({provider}) to credential {credential_id}"
        # Not a credentials check: a 400 here ("Can't add same credential") stays an HttpError.
        path = f"{self._models_path(provider)}/credentials/switch"
        self._console(operation, "POST", path, json=body, retry=False)

    def save_model_legacy(
        self, provider: str, model: str, model_type: str, credentials: Mapping[str, str]
    ) -> None:
        """Dify < 1.8: ``POST .../models`` saves the model's one credential.

        Refused on >= 1.8, where that call answers success without storing anything.
        """
        if self.uses_credentials_api():
            raise NotSupportedByVersion(
                "POST .../models ignores credentials on Dify 1.8 and newer; use create_credential"
            )
        body = {
            "model": model,
            "model_type": model_type,
            "credentials": require_string_credentials(credentials, model),
            "load_balancing": {"enabled": False, "configs": []},
        }
        operation = f"save {model_type} model {model} ({provider})"
        self._credential_call(operation, provider, "POST", self._models_path(provider), body)

    def _credential_call(
        self,
        operation: str,
        provider: str,
        method: str,
        path: str,
        body: Mapping[str, Any],
        *,
        ok: Iterable[int] = (200,),
        retry: bool = False,
        stored: Callable[[], bool] | None = None,
    ) -> None:
        """A call that makes Dify validate credentials: 400 invalid_param is a rejection.

        Dify goes on validating after a client gives up; on a timeout ``stored`` re-reads the
        credential, so a slow validation that succeeded is not reported as failed.
        """
        try:
            self._console(
                operation,
                method,
                path,
                json=dict(body),
                ok=ok,
                retry=retry,
                timeout=CREDENTIAL_VALIDATION_TIMEOUT,
            )
        except HttpError as exc:
            if exc.status is None and stored is not None and _stored_after_all(stored):
                return
            if exc.status == 400 and error_code(exc) == "invalid_param":
                raise CredentialsRejected(
                    provider, str(body.get("model")), str(body.get("model_type")), exc.server_message
                ) from None
            raise

    # ---- models and defaults -------------------------------------------------------------------

    def providers(self) -> list[dict[str, Any]]:
        operation = "list Dify model providers"
        return _data_list(self._console(operation, "GET", f"{WORKSPACE}/model-providers"), operation)

    def provider_models(self, provider: str) -> list[dict[str, Any]]:
        """The provider's models with their ``status`` (active, disabled, credential-removed...)."""
        operation = f"list the models of {provider}"
        return _data_list(self._console(operation, "GET", self._models_path(provider)), operation)

    def models_of_type(self, model_type: str) -> list[dict[str, Any]]:
        """Providers with their active models of one type (llm, text-embedding, rerank...)."""
        operation = f"list Dify {model_type} models"
        path = f"{WORKSPACE}/models/model-types/{model_type}"
        return _data_list(self._console(operation, "GET", path), operation)

    def default_model(self, model_type: str) -> dict[str, Any] | None:
        operation = f"read the default {model_type} model"
        response = self._console(
            operation, "GET", f"{WORKSPACE}/default-model", params={"model_type": model_type}
        )
        data = json_object(response, operation).get("data")
        return data if isinstance(data, dict) else None

    def set_default_models(self, settings: Iterable[tuple[str, str, str]]) -> None:
        """Set system default models from (model_type, provider, model). Old versions answer success
        even for an inactive model: read back with ``default_model``."""
        model_settings = [
            {"model_type": model_type, "provider": provider, "model": model}
            for model_type, provider, model in settings
        ]
        described = ", ".join(f"{s['model_type']}={s['model']}" for s in model_settings)
        self._console(
            f"set Dify default models ({described})",
            "POST",
            f"{WORKSPACE}/default-model",
            json={"model_settings": model_settings},
            retry=True,  # setting the same defaults twice is harmless
        )


def _stored_after_all(stored: Callable[[], bool]) -> bool:
    try:
        return stored()
    except HttpError:
        return False


def _credential_body(
    model: str,
    model_type: str,
    credentials: Mapping[str, str],
    name: str | None,
    credential_id: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "model_type": model_type}
    if credential_id is not None:
        body["credential_id"] = credential_id
    body["credentials"] = require_string_credentials(credentials, model)
    if name:
        body["name"] = name
    return body


def _dotted(version: Version) -> str:
    return ".".join(str(part) for part in version)


def _data_list(response: httpx.Response, operation: str) -> list[dict[str, Any]]:
    data = json_object(response, operation).get("data")
    if not isinstance(data, list):
        raise UnexpectedAnswer(f"{operation}: the answer has no data list")
    return [item for item in data if isinstance(item, dict)]


class PluginTaskWait(WaitStrategy):
    """A plugin install task (read through Dify, which then refreshes its provider cache), for the
    waits runner: ready on success; a failed task raises PluginInstallFailed naming each plugin."""

    def __init__(
        self,
        console: DifyConsole,
        task_id: str,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.console = console
        self.task_id = task_id
        self.on_progress = on_progress

    def probe(self) -> Probe:
        task = self.console.task(self.task_id)
        if self.on_progress is not None:
            self.on_progress(task)
        failures = _failed_plugins(task)
        if task.get("status") == "failed" or failures:
            raise _install_failure(self.task_id, task, failures)
        plugins = _plugins_of(task)
        done = task.get("completed_plugins", sum(1 for p in plugins if p.get("status") == "success"))
        total = task.get("total_plugins", len(plugins))
        pending = "; ".join(
            f"{plugin.get('plugin_id')}: {plugin.get('status')}"
            for plugin in plugins
            if plugin.get("status") != "success"
        )
        detail = f"install task {task.get('status')}, {done}/{total} plugins"
        return Probe(task.get("status") == "success", f"{detail} ({pending})" if pending else detail)


def _plugins_of(task: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [plugin for plugin in task.get("plugins") or [] if isinstance(plugin, dict)]


def _failed_plugins(task: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        (
            str(plugin.get("plugin_id") or plugin.get("plugin_unique_identifier")),
            str(plugin.get("message") or ""),
        )
        for plugin in _plugins_of(task)
        if plugin.get("status") == "failed"
    ]


def _install_failure(
    task_id: str, task: Mapping[str, Any], failures: list[tuple[str, str]]
) -> PluginInstallFailed:
    if not failures:
        failures = [("(task)", str(task.get("message") or "failed without a message"))]
    details = "; ".join(f"{plugin_id}: {message}" for plugin_id, message in failures)
    hint = None
    if any("dependencies" in message for _, message in failures):
        hint = (
            "the plugin daemon could not install the plugin's Python dependencies; offline hosts need "
            "PIP_MIRROR_URL or a repackaged plugin with bundled wheels"
        )
    error = PluginInstallFailed(f"plugin install task {task_id} failed: {details}", failures, task)
    error.hint = hint
    return error
