"""Fake Dify 1.x api container (role ``dify-api``, port 5001).

Implements the console API a bootstrap script drives (reference notes
/work/shared/reference/dify-console-api.md): ``/health``, ping, setup/init, system
features, login/logout/refresh with the version's session scheme, the plugin endpoints (which
forward to the plugin daemon over HTTP, like the real api) and the model-provider endpoints
(:mod:`difystack.fakes.dify_api_models`), and the apps and knowledge bases ``difystack verify``
drives, console and service API (:mod:`difystack.fakes.dify_api_apps`). Errors use Dify's
``{"code", "message", "status"}`` shape and every response carries ``X-Version``.

Environment (names of the real api container): ``SECRET_KEY``, ``INIT_PASSWORD``,
``ACCESS_TOKEN_EXPIRE_MINUTES``, ``REFRESH_TOKEN_EXPIRE_DAYS``, ``CONSOLE_API_URL`` /
``CONSOLE_WEB_URL`` (both https: ``__Host-`` cookies with ``Secure``), ``PLUGIN_DAEMON_URL``,
``PLUGIN_DAEMON_KEY``, ``MARKETPLACE_ENABLED``, ``MARKETPLACE_API_URL``,
``PLUGIN_MAX_PACKAGE_SIZE``; fake-only: ``DIFYSTACK_FAKE_DIFY_VERSION`` (default 1.13.3),
``DIFYSTACK_FAKE_STATE_DIR`` (JSON state, default /app/api/storage/difystack-fake),
``DIFYSTACK_FAKE_MARKETPLACE_PACKAGES`` (the real .difypkg files the simulated marketplace
serves, signed: :mod:`~difystack.fakes.marketplace`) and ``DIFYSTACK_FAKE_MARKETPLACE``
(``reachable``, or ``unreachable``: downloads fail as offline).

Behaviour: ``ready_delay`` / ``never-ready`` (503 until ready).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from difystack.fakes import difypkg
from difystack.fakes.behaviour import Behaviour
from difystack.fakes.common_old import JournalMiddleware, RequestJournal, json_body
from difystack.fakes.dify_api_apps import AppsAndDatasets
from difystack.fakes.dify_api_core import (
    ALREADY_SETUP,
    AUTHENTICATION_FAILED,
    CSRF_INVALID,
    INIT_VALIDATE_FAILED,
    INVALID_ENCRYPTED_DATA,
    LOGIN_LOCKED,
    NOT_INIT_VALIDATED,
    NOT_SETUP,
    UNAUTHORIZED,
    ApiConfig,
    ApiState,
    DifyError,
    PluginDaemonClient,
    PluginDaemonFailure,
    PluginDaemonUnavailable,
    Principal,
    invalid_param,
    jwt_decode,
    jwt_encode,
    read_session,
    sign_session,
)
from difystack.fakes.dify_api_models import ModelProviders
from difystack.fakes.common.readiness import Readiness, ReadinessGate
from difystack.fakes.marketplace import Marketplace

CONSOLE = "/console/api"
PASSWORD_PATTERN = re.compile(r"^(?=.*[a-zA-Z])(?=.*\d).{8,}$")
EMAIL_PATTERN = re.compile(r"^[\w.+-]+@([\w-]+\.)*[\w-]+$")
ConsoleHandler = Callable[[Request, Principal], Awaitable[Response]]
PublicHandler = Callable[[Request], Awaitable[Response]]


def plugin_error(failure: PluginDaemonFailure) -> JSONResponse:
    """How the console API reports a daemon-side error (PluginDaemonClientSideError)."""
    return JSONResponse({"code": "plugin_error", "message": str(failure)}, status_code=400)


class DifyApi:
    def __init__(self, behaviour: Behaviour, config: ApiConfig) -> None:
        self.behaviour = behaviour
        self.config = config
        self.state = ApiState.load(config.state_dir)
        self.daemon = PluginDaemonClient(config.plugin_daemon_url, config.plugin_daemon_key)
        self.models = ModelProviders(config, self.state, self.daemon)
        self.marketplace = Marketplace(config.marketplace_packages)
        self.apps = AppsAndDatasets(self.state, self.daemon, self.models)

    # --- request wrappers ---------------------------------------------------------------

    def public(self, handler: PublicHandler, *, setup_required: bool = False) -> PublicHandler:
        async def wrapped(request: Request) -> Response:
            try:
                if setup_required:
                    self.require_setup()
                return await handler(request)
            except DifyError as error:
                return error.response()
            except PluginDaemonUnavailable as exc:
                return DifyError(500, "internal_server_error", str(exc)).response()

        return wrapped

    def console(self, handler: ConsoleHandler) -> PublicHandler:
        """``@setup_required @login_required`` (with the CSRF check from 1.9.2 on)."""

        async def wrapped(request: Request) -> Response:
            try:
                self.require_setup()
                return await handler(request, self.authenticate(request))
            except DifyError as error:
                return error.response()
            except PluginDaemonFailure as failure:
                return plugin_error(failure)
            except PluginDaemonUnavailable as exc:
                return DifyError(500, "internal_server_error", str(exc)).response()

        return wrapped

    def require_setup(self) -> None:
        if self.state.setup is None:
            raise NOT_INIT_VALIDATED if self.config.init_password else NOT_SETUP

    def authenticate(self, request: Request) -> Principal:
        token = self.access_token(request)
        payload = jwt_decode(token, self.config.secret_key) if token else None
        account = self.state.accounts.get(str(payload.get("user_id"))) if payload else None
        if account is None or self.state.tenant is None:
            raise UNAUTHORIZED
        if self.config.features.cookie_session and request.method != "OPTIONS":
            self.check_csrf(request, account["id"])
        return Principal(account=account, tenant=self.state.tenant)

    def access_token(self, request: Request) -> str | None:
        if self.config.features.cookie_session:
            cookie = request.cookies.get(self.config.cookie_name("access_token"))
            if cookie:
                return cookie
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None

    def check_csrf(self, request: Request, user_id: str) -> None:
        header = request.headers.get("X-CSRF-Token", "")
        cookie = request.cookies.get(self.config.cookie_name("csrf_token"), "")
        payload = jwt_decode(header, self.config.secret_key) if header else None
        if not payload or header != cookie or payload.get("sub") != user_id:
            raise CSRF_INVALID

    # --- health, setup, init ------------------------------------------------------------

    async def health(self, _: Request) -> Response:
        return JSONResponse({"pid": os.getpid(), "status": "ok", "version": str(self.config.version)})

    async def ping(self, _: Request) -> Response:
        return JSONResponse({"result": "pong"})

    async def setup_status(self, _: Request) -> Response:
        if self.state.setup is None:
            return JSONResponse({"step": "not_started"})
        return JSONResponse({"step": "finished", "setup_at": self.state.setup["setup_at"]})

    async def setup(self, request: Request) -> Response:
        if self.state.setup is not None or self.state.tenant is not None:
            raise ALREADY_SETUP
        if not self.init_validated(request):
            raise NOT_INIT_VALIDATED
        body = await json_body(request)
        email, name, password, language = self.parse_setup(body if isinstance(body, dict) else {})
        self.state.create_owner(email, name, password, language, str(self.config.version))
        return JSONResponse({"result": "success"}, status_code=201)

    @staticmethod
    def parse_setup(body: Mapping[str, Any]) -> tuple[str, str, str, str]:
        email, name, password = body.get("email"), body.get("name"), body.get("password")
        for field, value in (("email", email), ("name", name), ("password", password)):
            if not isinstance(value, str):
                raise invalid_param(
                    f"{field}: Field required"
                    if value is None
                    else f"{field}: Input should be a valid string"
                )
        if not EMAIL_PATTERN.match(email):
            raise invalid_param(f"{email} is not a valid email.")
        if len(name) > 30:
            raise invalid_param("name: String should have at most 30 characters")
        if not PASSWORD_PATTERN.match(password):
            raise invalid_param(
                "Password must contain letters and numbers, and the length must be greater than 8."
            )
        language = body.get("language")
        return email.lower(), name, password, language if isinstance(language, str) else "en-US"

    def init_validated(self, request: Request) -> bool:
        if not self.config.init_password or self.state.setup is not None:
            return True
        return bool(
            read_session(request.cookies.get("session"), self.config.secret_key).get("is_init_validated")
        )

    async def init_status(self, request: Request) -> Response:
        return JSONResponse({"status": "finished" if self.init_validated(request) else "not_started"})

    async def init_validate(self, request: Request) -> Response:
        if self.state.tenant is not None:
            raise ALREADY_SETUP
        body = await json_body(request)
        password = body.get("password") if isinstance(body, dict) else None
        if not isinstance(password, str):
            raise invalid_param("password: Field required")
        if len(password) > 30:
            raise invalid_param("password: String should have at most 30 characters")
        validated = password == self.config.init_password
        response = (
            JSONResponse({"result": "success"}, status_code=201)
            if validated
            else INIT_VALIDATE_FAILED.response()
        )
        session = sign_session({"is_init_validated": validated}, self.config.secret_key)
        response.set_cookie("session", session, path="/", httponly=True, samesite="lax")
        return response

    async def system_features(self, _: Request) -> Response:
        return JSONResponse(
            {
                "sso_enforced_for_signin": False,
                "sso_enforced_for_signin_protocol": "",
                "enable_marketplace": self.config.marketplace_enabled,
                "max_plugin_package_size": self.config.max_package_size,
                "enable_email_code_login": False,
                "enable_email_password_login": True,
                "enable_social_oauth_login": False,
                "is_allow_register": False,
                "is_allow_create_workspace": False,
                "is_email_setup": False,
                "license": {"status": "none", "expired_at": ""},
                "branding": {"enabled": False},
                "webapp_auth": {"enabled": False},
                "plugin_installation_permission": {
                    "plugin_installation_scope": "all",
                    "restrict_to_marketplace_only": False,
                },
                "enable_change_email": True,
            }
        )

    # --- login, logout, refresh ---------------------------------------------------------

    async def login(self, request: Request) -> Response:
        body = await json_body(request)
        body = body if isinstance(body, dict) else {}
        email, password = body.get("email"), body.get("password")
        if not isinstance(email, str) or not isinstance(password, str):
            raise invalid_param("email and password are required")
        if self.config.features.base64_password:
            password = decode_base64_password(password)
        email = email.strip().lower()
        if self.state.login_locked(email):
            raise LOGIN_LOCKED
        account = self.state.account_by_email(email)
        if account is None or not self.state.password_matches(account, password):
            self.state.add_login_error(email)
            raise AUTHENTICATION_FAILED
        self.state.reset_login_errors(email)
        account["last_login_at"] = time.time()
        self.state.save()
        return self.issue_tokens(account["id"])

    def issue_tokens(self, account_id: str) -> Response:
        access_seconds = self.config.access_token_minutes * 60
        now = int(time.time())
        access = jwt_encode(
            {
                "user_id": account_id,
                "exp": now + access_seconds,
                "iss": "SELF_HOSTED",
                "sub": "Console API Passport",
            },
            self.config.secret_key,
        )
        refresh = os.urandom(64).hex()
        refresh_seconds = self.config.refresh_token_days * 86400
        self.state.refresh_tokens = {
            token: entry
            for token, entry in self.state.refresh_tokens.items()
            if entry["account_id"] != account_id
        }
        self.state.refresh_tokens[refresh] = {"account_id": account_id, "expires_at": now + refresh_seconds}
        self.state.save()
        if not self.config.features.cookie_session:
            return JSONResponse(
                {"result": "success", "data": {"access_token": access, "refresh_token": refresh}}
            )
        csrf = jwt_encode({"exp": now + access_seconds, "sub": account_id}, self.config.secret_key)
        response = JSONResponse({"result": "success"})
        self.set_cookie(response, "access_token", access, access_seconds, httponly=True)
        self.set_cookie(response, "refresh_token", refresh, refresh_seconds, httponly=True)
        self.set_cookie(response, "csrf_token", csrf, access_seconds, httponly=False)
        return response

    def set_cookie(self, response: Response, name: str, value: str, max_age: int, *, httponly: bool) -> None:
        response.set_cookie(
            self.config.cookie_name(name),
            value,
            max_age=max_age,
            path="/",
            secure=self.config.secure_cookies,
            httponly=httponly,
            samesite="lax",
        )

    async def logout(self, request: Request) -> Response:
        token = self.access_token(request)
        payload = jwt_decode(token, self.config.secret_key) if token else None
        if payload:
            account_id = payload.get("user_id")
            self.state.refresh_tokens = {
                key: entry
                for key, entry in self.state.refresh_tokens.items()
                if entry["account_id"] != account_id
            }
            self.state.save()
        response = JSONResponse({"result": "success"})
        if self.config.features.cookie_session:
            for name in ("access_token", "refresh_token", "csrf_token"):
                response.delete_cookie(
                    self.config.cookie_name(name), path="/", secure=self.config.secure_cookies
                )
        return response

    async def refresh_token(self, request: Request) -> Response:
        cookie_session = self.config.features.cookie_session
        if cookie_session:
            token = request.cookies.get(self.config.cookie_name("refresh_token"))
        else:
            body = await json_body(request)
            token = body.get("refresh_token") if isinstance(body, dict) else None
        entry = self.state.refresh_tokens.get(token or "")
        if not token or entry is None or entry["expires_at"] < time.time():
            reason = "No refresh token provided" if not token else "Invalid refresh token"
            return JSONResponse(
                {"result": "fail", "message" if cookie_session else "data": reason}, status_code=401
            )
        del self.state.refresh_tokens[token]
        return self.issue_tokens(entry["account_id"])

    # --- workspace ----------------------------------------------------------------------

    async def current_workspace(self, _: Request, principal: Principal) -> Response:
        tenant = principal.tenant
        return JSONResponse(
            {
                "id": tenant["id"],
                "name": tenant["name"],
                "plan": "sandbox",
                "status": "normal",
                "created_at": tenant["created_at"],
                "role": "owner",
                "in_trial": None,
                "trial_end_reason": None,
                "custom_config": None,
            }
        )

    # --- plugins ------------------------------------------------------------------------

    def plugin_path(self, principal: Principal, tail: str) -> str:
        return f"/plugin/{principal.tenant_id}/management/{tail}"

    async def plugin_list(self, request: Request, principal: Principal) -> Response:
        page = query_int(request, "page", default=1, minimum=1)
        page_size = query_int(request, "page_size", default=256, minimum=1, maximum=256)
        if not self.config.features.paginated_plugin_list:
            page, page_size = 1, 256
        data = await self.daemon.call(
            "GET", self.plugin_path(principal, "list"), params={"page": page, "page_size": page_size}
        )
        plugins = [self.with_latest_version(plugin) for plugin in data["list"]]
        if not self.config.features.paginated_plugin_list:
            return JSONResponse({"plugins": plugins})
        return JSONResponse({"plugins": plugins, "total": data["total"]})

    def with_latest_version(self, plugin: Mapping[str, Any]) -> dict[str, Any]:
        latest = self.latest_version(str(plugin["plugin_id"]))
        return {
            **plugin,
            "latest_version": latest["version"] if latest else None,
            "latest_unique_identifier": latest["unique_identifier"] if latest else None,
            "status": "active",
            "deprecated_reason": "",
            "alternative_plugin_id": "",
        }

    def latest_version(self, plugin_id: str) -> dict[str, Any] | None:
        if not (self.config.marketplace_enabled and self.config.marketplace_reachable):
            return None
        package = self.marketplace.latest(plugin_id)
        if package is None:
            return None
        return {
            "plugin_id": plugin_id,
            "version": difypkg.read_manifest(package)["version"],
            "unique_identifier": difypkg.unique_identifier(package),
            "status": "active",
            "deprecated_reason": "",
            "alternative_plugin_id": "",
        }

    async def latest_versions(self, request: Request, _: Principal) -> Response:
        body = await json_body(request)
        plugin_ids = body.get("plugin_ids") if isinstance(body, dict) else None
        if not isinstance(plugin_ids, list) or not all(isinstance(item, str) for item in plugin_ids):
            raise invalid_param("plugin_ids: Input should be a valid list")
        if not self.config.marketplace_enabled:
            return JSONResponse({"versions": {}})
        return JSONResponse(
            {"versions": {plugin_id: self.latest_version(plugin_id) for plugin_id in plugin_ids}}
        )

    def download_from_marketplace(self, identifier: str) -> bytes:
        """``GET {MARKETPLACE_API_URL}/api/v1/plugins/download?unique_identifier=...`` (simulated)."""
        url = f"{self.config.marketplace_api_url}/api/v1/plugins/download?unique_identifier={identifier}"
        if not self.config.marketplace_reachable:
            raise invalid_param(f"Reached maximum retries (3) for URL {url}")
        package = self.marketplace.download(identifier)
        if package is None:
            raise invalid_param("file not found")
        return package

    async def install_from_marketplace(self, request: Request, principal: Principal) -> Response:
        if not self.config.marketplace_enabled:
            raise invalid_param("marketplace is not enabled")
        identifiers = await plugin_identifiers(request)
        for identifier in identifiers:
            known = await self.daemon.call(
                "GET",
                self.plugin_path(principal, "fetch/identifier"),
                params={"plugin_unique_identifier": identifier},
            )
            if not known:
                await self.upload_to_daemon(principal, self.download_from_marketplace(identifier))
        metas = [{"plugin_unique_identifier": identifier} for identifier in identifiers]
        return await self.install_identifiers(principal, identifiers, "marketplace", metas)

    async def upload_to_daemon(self, principal: Principal, package: bytes) -> Any:
        return await self.daemon.call(
            "POST",
            self.plugin_path(principal, "install/upload/package"),
            files={"dify_pkg": ("plugin.difypkg", package, "application/octet-stream")},
            data={
                "verify_signature": "false"
            },  # restrict_to_marketplace_only is off in the community edition
        )

    async def install_identifiers(
        self, principal: Principal, identifiers: list[str], source: str, metas: list[dict[str, Any]]
    ) -> Response:
        data = await self.daemon.call(
            "POST",
            self.plugin_path(principal, "install/identifiers"),
            json={"plugin_unique_identifiers": identifiers, "source": source, "metas": metas},
        )
        return JSONResponse({"all_installed": data["all_installed"], "task_id": data["task_id"]})

    async def upload_package(self, request: Request, principal: Principal) -> Response:
        form = await request.form()
        upload = form.get("pkg")
        if not isinstance(upload, UploadFile):
            raise DifyError(
                400,
                "bad_request",
                "The browser (or proxy) sent a request that this server could not understand.",
            )
        package = await upload.read()
        if len(package) > self.config.max_package_size:
            raise invalid_param("File size exceeds the maximum allowed size")
        return JSONResponse(await self.upload_to_daemon(principal, package))

    async def install_package(self, request: Request, principal: Principal) -> Response:
        identifiers = await plugin_identifiers(request)
        for identifier in identifiers:
            # Dify checks each package's declaration (and signature verdict) before installing it.
            await self.daemon.call(
                "GET",
                self.plugin_path(principal, "decode/from_identifier"),
                params={"plugin_unique_identifier": identifier},
            )
        return await self.install_identifiers(principal, identifiers, "package", [{} for _ in identifiers])

    async def install_tasks(self, request: Request, principal: Principal) -> Response:
        page = query_int(request, "page", minimum=1)
        page_size = query_int(request, "page_size", minimum=1, maximum=256)
        params = {"page": page, "page_size": page_size}
        return JSONResponse(
            {
                "tasks": await self.daemon.call(
                    "GET", self.plugin_path(principal, "install/tasks"), params=params
                )
            }
        )

    async def install_task(self, request: Request, principal: Principal) -> Response:
        path = self.plugin_path(principal, f"install/tasks/{request.path_params['task_id']}")
        return JSONResponse({"task": await self.daemon.call("GET", path)})

    async def delete_install_task(self, request: Request, principal: Principal) -> Response:
        path = self.plugin_path(principal, f"install/tasks/{request.path_params['task_id']}/delete")
        return JSONResponse({"success": await self.daemon.call("POST", path)})

    async def delete_all_install_tasks(self, _: Request, principal: Principal) -> Response:
        return JSONResponse(
            {
                "success": await self.daemon.call(
                    "POST", self.plugin_path(principal, "install/tasks/delete_all")
                )
            }
        )

    async def uninstall(self, request: Request, principal: Principal) -> Response:
        body = await json_body(request)
        installation_id = body.get("plugin_installation_id") if isinstance(body, dict) else None
        if not isinstance(installation_id, str):
            raise invalid_param("plugin_installation_id: Field required")
        result = await self.daemon.call(
            "POST", self.plugin_path(principal, "uninstall"), json={"plugin_installation_id": installation_id}
        )
        return JSONResponse({"success": result})

    # --- routing ------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        public, console = self.public, self.console
        plugin = f"{CONSOLE}/workspaces/current/plugin"
        return [
            Route("/health", self.health, methods=["GET"]),
            Route(f"{CONSOLE}/ping", public(self.ping), methods=["GET"]),
            Route(f"{CONSOLE}/setup", public(self.setup_status), methods=["GET"]),
            Route(f"{CONSOLE}/setup", public(self.setup), methods=["POST"]),
            Route(f"{CONSOLE}/init", public(self.init_status), methods=["GET"]),
            Route(f"{CONSOLE}/init", public(self.init_validate), methods=["POST"]),
            Route(f"{CONSOLE}/system-features", public(self.system_features), methods=["GET"]),
            Route(f"{CONSOLE}/login", public(self.login, setup_required=True), methods=["POST"]),
            Route(f"{CONSOLE}/logout", public(self.logout, setup_required=True), methods=["POST"]),
            Route(f"{CONSOLE}/refresh-token", public(self.refresh_token), methods=["POST"]),
            Route(f"{CONSOLE}/workspaces/current", console(self.current_workspace), methods=["GET", "POST"]),
            Route(f"{plugin}/list", console(self.plugin_list), methods=["GET"]),
            Route(f"{plugin}/list/latest-versions", console(self.latest_versions), methods=["POST"]),
            Route(f"{plugin}/install/marketplace", console(self.install_from_marketplace), methods=["POST"]),
            Route(f"{plugin}/upload/pkg", console(self.upload_package), methods=["POST"]),
            Route(f"{plugin}/install/pkg", console(self.install_package), methods=["POST"]),
            Route(f"{plugin}/tasks", console(self.install_tasks), methods=["GET"]),
            Route(f"{plugin}/tasks/delete_all", console(self.delete_all_install_tasks), methods=["POST"]),
            Route(f"{plugin}/tasks/{{task_id}}", console(self.install_task), methods=["GET"]),
            Route(f"{plugin}/tasks/{{task_id}}/delete", console(self.delete_install_task), methods=["POST"]),
            Route(f"{plugin}/uninstall", console(self.uninstall), methods=["POST"]),
            *self.models.routes(console),
            *self.apps.routes(console),
        ]


def decode_base64_password(value: str) -> str:
    """Dify's ``decrypt_password_field`` (>= 1.11.1): base64, else 401 Invalid encrypted data."""
    try:
        return base64.b64decode(value).decode("utf-8")
    except (binascii.Error, ValueError):
        raise INVALID_ENCRYPTED_DATA from None


def query_int(
    request: Request, name: str, *, default: int | None = None, minimum: int = 1, maximum: int | None = None
) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise invalid_param(f"{name}: Field required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid_param(f"{name}: Input should be a valid integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise invalid_param(f"{name}: Input should be between {minimum} and {maximum}")
    return value


async def plugin_identifiers(request: Request) -> list[str]:
    body = await json_body(request)
    identifiers = body.get("plugin_unique_identifiers") if isinstance(body, dict) else None
    if not isinstance(identifiers, list) or not all(isinstance(item, str) for item in identifiers):
        raise invalid_param("plugin_unique_identifiers: Input should be a valid list of strings")
    return identifiers


class VersionHeaders:
    """``X-Version`` / ``X-Env`` on every response (``ext_app_metrics.after_request``)."""

    def __init__(self, app: ASGIApp, version: str) -> None:
        self.app = app
        self.version = version

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Version"] = self.version
                headers["X-Env"] = "PRODUCTION"
            await send(message)

        await self.app(scope, receive, send_with_version)


async def http_error(_: Request, exc: Exception) -> Response:
    """Werkzeug-style JSON for unknown routes (404) and wrong methods (405)."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    codes = {
        404: ("not_found", "The requested URL was not found on the server."),
        405: ("method_not_allowed", "The method is not allowed for the requested URL."),
    }
    code, message = codes.get(status, ("internal_server_error", "Internal Server Error"))
    return JSONResponse({"code": code, "message": message, "status": status}, status_code=status)


def create_app(behaviour: Behaviour, env: Mapping[str, str]) -> Starlette:
    config = ApiConfig.from_env(env)
    api = DifyApi(behaviour, config)
    journal = RequestJournal()
    readiness = Readiness(behaviour)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        readiness.mark_started()
        yield

    app = Starlette(
        routes=[*journal.routes(), *api.routes()],
        exception_handlers={404: http_error, 405: http_error},
        lifespan=lifespan,
    )
    app.state.api = api
    app.add_middleware(VersionHeaders, version=str(config.version))
    app.add_middleware(ReadinessGate, readiness=readiness)
    app.add_middleware(JournalMiddleware, journal=journal)
    return app
