"""DifyConsole against the fake Dify api + plugin daemon, which validate credentials against the
fake Xinference and LocalAI (reference: dify-console-api.md §0-§6), plus MockTransport servers
for the version branches the fakes do not cover (0.x, < 1.9.2 tokens, < 1.11.1 passwords)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from difystack.clients.dify import (
    CREDENTIAL_VALIDATION_TIMEOUT,
    AlreadySetUp,
    CredentialsRejected,
    DifyConsole,
    InitPasswordRejected,
    LoginFailed,
    LoginLocked,
    NotSupportedByVersion,
    PluginInstallFailed,
    PluginTaskWait,
)
from difystack.clients.http import HttpError, TransientHttpError
from difystack.clients.localai import JobWait, LocalAIClient
from difystack.clients.xinference import XinferenceClient
from difystack.errors import DifystackError
from difystack.fakes import difypkg
from difystack.fakes.behaviour import Behaviour
from difystack.fakes.dify_api import create_app as create_api
from difystack.fakes.dify_plugin_daemon import create_app as create_daemon
from difystack.fakes.localai import create_app as create_localai
from difystack.fakes.xinference import create_app as create_xinference
from tests.clients import RequestRecorder, ScriptedServer, dify_error
from tests.conftest import free_port, serve_app, wait_until_done
from tests.fakes.real_plugins import marketplace_identifier, marketplace_package, real_plugins_env

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "Passw0rd123"
INIT_PASSWORD = "init-Passw0rd-42"
DAEMON_KEY = "client-test-daemon-key"
XINFERENCE = "langgenius/xinference/xinference"
LOCALAI = "langgenius/localai/localai"
CREDENTIALS = "/console/api/workspaces/current/model-providers/{}/models/credentials"


# ---- the model servers Dify's plugins validate against -------------------------------------------


@dataclass(frozen=True)
class ModelServers:
    xinference: str
    localai: str


@pytest.fixture(scope="module")
def model_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServers]:
    """Xinference (auth off) running uids qwen (chat LLM) and bge (384-d embedding); LocalAI
    with the chat model llama installed. Set up through the clients themselves."""
    home = tmp_path_factory.mktemp("xinference")
    models = tmp_path_factory.mktemp("localai")
    xinference_app = create_xinference(
        Behaviour(), {"XINFERENCE_HOME": str(home), "XINFERENCE_AUTH_ADVANCED": "0"}
    )
    localai_app = create_localai(Behaviour(), {"MODELS_PATH": str(models)})
    with serve_app(xinference_app) as xinference_url, serve_app(localai_app) as localai_url:
        with XinferenceClient(xinference_url) as xinference:
            xinference.launch(
                {
                    "model_uid": "qwen",
                    "model_name": "qwen2.5-instruct",
                    "model_type": "LLM",
                    "model_engine": "llama.cpp",
                    "model_format": "ggufv2",
                    "model_size_in_billions": "0_5",
                    "quantization": "q4_k_m",
                },
                wait_ready=True,
            )
            xinference.launch(
                {"model_uid": "bge", "model_name": "bge-small-en-v1.5", "model_type": "embedding"},
                wait_ready=True,
            )
        with LocalAIClient(localai_url) as localai:
            job = localai.apply({"id": "localai@llama-3.2-1b-instruct:q4_k_m", "name": "llama"})
            assert wait_until_done(JobWait(localai, job)).ok
        yield ModelServers(xinference_url, localai_url)


# ---- the fake Dify ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DifyStack:
    api_url: str
    daemon_url: str

    def journal(self) -> list[dict]:
        return httpx.get(f"{self.api_url}/_fake/requests").json()

    def calls(self, method: str, path: str) -> int:
        return sum(1 for entry in self.journal() if (entry["method"], entry["path"]) == (method, path))


@contextmanager
def dify_stack(
    tmp_path: Path,
    *,
    version: str = "1.13.3",
    api_env: dict[str, str] | None = None,
    daemon_behaviour: Behaviour | None = None,
) -> Iterator[DifyStack]:
    daemon_env = {
        "SERVER_KEY": DAEMON_KEY,
        "PLUGIN_STORAGE_LOCAL_ROOT": str(tmp_path / "daemon"),
        **real_plugins_env(),
    }
    with serve_app(
        create_daemon(daemon_behaviour or Behaviour(launch_latency=0.2), daemon_env)
    ) as daemon_url:
        env = {
            "DIFYSTACK_FAKE_DIFY_VERSION": version,
            "SECRET_KEY": "client-test-secret",
            "PLUGIN_DAEMON_URL": daemon_url,
            "PLUGIN_DAEMON_KEY": DAEMON_KEY,
            "DIFYSTACK_FAKE_STATE_DIR": str(tmp_path / "api"),
            **real_plugins_env(),
            **(api_env or {}),
        }
        with serve_app(create_api(Behaviour(), env)) as api_url:
            yield DifyStack(api_url, daemon_url)


def logged_in(stack: DifyStack) -> DifyConsole:
    console = DifyConsole(stack.api_url)
    console.setup(ADMIN_EMAIL, "admin", ADMIN_PASSWORD)
    console.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    return console


def install_official(console: DifyConsole, *plugin_ids: str) -> None:
    identifiers = list(console.latest_versions(plugin_ids).values())
    task_id = console.install_from_marketplace(identifiers)
    assert task_id is not None
    assert wait_until_done(PluginTaskWait(console, task_id)).ok


def xinference_credentials(server_url: str, uid: str, invoke_timeout: str = "60") -> dict[str, str]:
    return {"server_url": server_url, "model_uid": uid, "invoke_timeout": invoke_timeout, "max_retries": "3"}


# ---- the full flow on the pinned 1.13.3 -----------------------------------------------------------


def test_full_flow_on_1_13_3(tmp_path: Path, model_servers: ModelServers) -> None:
    api_env = {"INIT_PASSWORD": INIT_PASSWORD}
    with dify_stack(tmp_path, api_env=api_env) as stack, DifyConsole(stack.api_url) as console:
        recorder = RequestRecorder(console)
        assert console.version() == (1, 13, 3)
        assert console.has_plugins() and console.uses_credentials_api()
        assert console.provider_id("xinference") == XINFERENCE
        assert console.provider_id("localai") == LOCALAI

        # setup behind the INIT_PASSWORD gate: /init first, in the same cookie jar, then /setup
        assert console.setup_state() == "not_started"
        assert console.init_required() is True
        with pytest.raises(InitPasswordRejected):
            console.validate_init_password("wrong-init-password")
        console.setup(ADMIN_EMAIL, "admin", ADMIN_PASSWORD, init_password=INIT_PASSWORD)
        assert recorder.last("POST", "/console/api/init").json == {"password": INIT_PASSWORD}
        assert recorder.last("POST", "/console/api/setup").json == {
            "email": ADMIN_EMAIL,
            "name": "admin",
            "password": ADMIN_PASSWORD,  # plain on /setup
            "language": "en-US",
        }
        assert console.setup_state() == "finished"
        with pytest.raises(AlreadySetUp):
            console.setup(ADMIN_EMAIL, "admin", ADMIN_PASSWORD, init_password=INIT_PASSWORD)

        console.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        assert recorder.last("POST", "/console/api/login").json == {
            "email": ADMIN_EMAIL,
            "password": base64.b64encode(ADMIN_PASSWORD.encode()).decode(),
            "remember_me": True,
        }
        csrf = console.http.cookies["csrf_token"]

        # plugins: marketplace install for Xinference, a local package for LocalAI
        latest = console.latest_versions(["langgenius/xinference", "langgenius/nonexistent"])
        assert recorder.last("POST", "/console/api/workspaces/current/plugin/list/latest-versions").json == {
            "plugin_ids": ["langgenius/xinference", "langgenius/nonexistent"]
        }
        xinference_id = marketplace_identifier("langgenius/xinference")
        assert latest == {"langgenius/xinference": xinference_id}
        task_id = console.install_from_marketplace([xinference_id])
        assert recorder.last("POST", "/console/api/workspaces/current/plugin/install/marketplace").json == {
            "plugin_unique_identifiers": [xinference_id]
        }
        assert task_id
        statuses: list[str] = []
        tasks: list[dict] = []
        waited = wait_until_done(PluginTaskWait(console, task_id, on_progress=tasks.append))
        statuses = [t["status"] for t in tasks]
        assert waited.ok and statuses[-1] == "success"
        assert "running" in statuses or "pending" in statuses
        assert console.install_from_marketplace([xinference_id]) is None  # all installed

        package = marketplace_package("langgenius/localai")
        localai_id = console.upload_package(package, "localai-0.0.8.difypkg")
        assert localai_id == difypkg.unique_identifier(package)
        upload = recorder.last("POST", "/console/api/workspaces/current/plugin/upload/pkg")
        assert upload.headers["content-type"].startswith("multipart/form-data")
        assert b'name="pkg"; filename="localai-0.0.8.difypkg"' in upload.raw
        upload_task = console.install_packages([localai_id])
        assert upload_task is not None
        tasks.clear()
        assert wait_until_done(PluginTaskWait(console, upload_task, on_progress=tasks.append)).ok
        assert tasks[-1]["plugins"][0]["source"] == "package"

        installed = console.installed_plugins()
        assert set(installed) == {"langgenius/xinference", "langgenius/localai"}
        assert installed["langgenius/xinference"]["plugin_unique_identifier"] == xinference_id
        assert installed["langgenius/localai"]["version"] == "0.0.8"
        assert {provider["provider"] for provider in console.providers()} == {XINFERENCE, LOCALAI}

        # models: the exact credential fields each plugin's schema needs, all strings
        xinference_llm = xinference_credentials(model_servers.xinference, "qwen")
        console.create_credential(XINFERENCE, "qwen-chat", "llm", xinference_llm, name="difystack")
        assert recorder.last("POST", CREDENTIALS.format(XINFERENCE)).json == {
            "model": "qwen-chat",
            "model_type": "llm",
            "credentials": xinference_llm,
            "name": "difystack",
        }
        console.create_credential(
            XINFERENCE, "bge", "text-embedding", xinference_credentials(model_servers.xinference, "bge")
        )
        localai_llm = {
            "server_url": model_servers.localai,
            "completion_type": "chat_completion",
            "context_size": "8192",
        }
        console.create_credential(LOCALAI, "llama", "llm", localai_llm, name="difystack")
        assert recorder.last("POST", CREDENTIALS.format(LOCALAI)).json["credentials"] == localai_llm

        stored = console.model_credentials(XINFERENCE, "qwen-chat", "llm")
        assert stored is not None
        assert recorder.last("GET", CREDENTIALS.format(XINFERENCE)).query == {
            "model": "qwen-chat",
            "model_type": "llm",
        }
        assert stored["current_credential_name"] == "difystack"
        assert stored["credentials"]["model_uid"] == "qwen"
        assert stored["credentials"]["invoke_timeout"] == "60"
        assert stored["credentials"]["completion_type"] == "chat"  # merged back from the plugin
        assert console.model_credentials(LOCALAI, "llama", "llm")["credentials"]["context_size"] == "8192"
        assert console.model_credentials(XINFERENCE, "not-registered", "llm") is None

        credential_id = stored["current_credential_id"]
        updated = xinference_credentials(model_servers.xinference, "qwen", invoke_timeout="120")
        console.update_credential(XINFERENCE, "qwen-chat", "llm", credential_id, updated)
        assert recorder.last("PUT", CREDENTIALS.format(XINFERENCE)).json == {
            "model": "qwen-chat",
            "model_type": "llm",
            "credential_id": credential_id,
            "credentials": updated,
        }
        assert (
            console.model_credentials(XINFERENCE, "qwen-chat", "llm")["credentials"]["invoke_timeout"]
            == "120"
        )

        assert [(m["model"], m["status"]) for m in console.provider_models(XINFERENCE)] == [
            ("qwen-chat", "active"),
            ("bge", "active"),
        ]
        llm_providers = {
            p["provider"]: [m["model"] for m in p["models"]] for p in console.models_of_type("llm")
        }
        assert llm_providers == {XINFERENCE: ["qwen-chat"], LOCALAI: ["llama"]}

        console.set_default_models([("llm", LOCALAI, "llama"), ("text-embedding", XINFERENCE, "bge")])
        assert recorder.last("POST", "/console/api/workspaces/current/default-model").json == {
            "model_settings": [
                {"model_type": "llm", "provider": LOCALAI, "model": "llama"},
                {"model_type": "text-embedding", "provider": XINFERENCE, "model": "bge"},
            ]
        }
        default_llm = console.default_model("llm")
        assert default_llm is not None
        assert (default_llm["model"], default_llm["provider"]["provider"]) == ("llama", LOCALAI)
        assert console.default_model("text-embedding")["model"] == "bge"
        assert console.default_model("rerank") is None

        # every console call after login carried the CSRF header equal to the csrf_token cookie
        after_login = recorder.sent[[s.path for s in recorder.sent].index("/console/api/login") + 1 :]
        console_calls = [s for s in after_login if s.path.startswith("/console/api/workspaces/")]
        assert console_calls and all(s.headers.get("X-CSRF-Token") == csrf for s in console_calls)
        assert all("Authorization" not in s.headers for s in console_calls)


def test_plugin_rejections_carry_the_plugins_text_and_non_strings_never_leave(
    tmp_path: Path, model_servers: ModelServers
) -> None:
    with dify_stack(tmp_path) as stack, logged_in(stack) as console:
        install_official(console, "langgenius/xinference")
        recorder = RequestRecorder(console)
        with pytest.raises(CredentialsRejected) as rejected:
            console.create_credential(
                XINFERENCE, "ghost", "llm", xinference_credentials(model_servers.xinference, "ghost")
            )
        assert rejected.value.reason.startswith("Xinference credentials validate failed: ")
        assert "Model not found in the model list, uid: ghost" in rejected.value.reason
        assert str(rejected.value).startswith(
            f"Dify rejected the credentials of llm model ghost ({XINFERENCE}): "
        )

        with pytest.raises(DifystackError) as not_a_string:
            console.create_credential(
                XINFERENCE,
                "qwen",
                "llm",
                {**xinference_credentials(model_servers.xinference, "qwen"), "max_retries": 3},
            )
        assert "credential max_retries of model qwen must be a string" in str(not_a_string.value)
        assert len(recorder.to("POST", CREDENTIALS.format(XINFERENCE))) == 1  # only the first one was sent

        with pytest.raises(NotSupportedByVersion):
            console.save_model_legacy(
                XINFERENCE, "qwen", "llm", xinference_credentials(model_servers.xinference, "qwen")
            )


def test_switch_credential_makes_another_one_active(tmp_path: Path, model_servers: ModelServers) -> None:
    with dify_stack(tmp_path) as stack, logged_in(stack) as console:
        install_official(console, "langgenius/xinference")
        for name in ("first", "second"):
            console.create_credential(
                XINFERENCE, "qwen", "llm", xinference_credentials(model_servers.xinference, "qwen"), name=name
            )
        record = console.model_credentials(XINFERENCE, "qwen", "llm")
        ids = {item["credential_name"]: item["credential_id"] for item in record["available_credentials"]}
        assert record["current_credential_name"] == "first"
        console.switch_credential(XINFERENCE, "qwen", "llm", ids["second"])
        assert console.model_credentials(XINFERENCE, "qwen", "llm")["current_credential_name"] == "second"
        with pytest.raises(HttpError) as same:  # not a credentials rejection
            console.switch_credential(XINFERENCE, "qwen", "llm", ids["second"])
        assert not isinstance(same.value, CredentialsRejected)
        assert same.value.server_message == "Can't add same credential"
        assert str(same.value).startswith(f"switch llm model qwen ({XINFERENCE}) to credential ")


def test_wrong_password_raises_login_failed_after_exactly_one_request(tmp_path: Path) -> None:
    with dify_stack(tmp_path) as stack, DifyConsole(stack.api_url) as console:
        console.setup(ADMIN_EMAIL, "admin", ADMIN_PASSWORD)
        with pytest.raises(LoginFailed) as failed:
            console.login(ADMIN_EMAIL, "Wrong-passw0rd")
        message = str(failed.value)
        assert "the stored admin password does not match" in message
        assert "Invalid email or password." in message and "difystack secrets path" in message
        assert isinstance(failed.value, DifystackError)
        assert stack.calls("POST", "/console/api/login") == 1  # no retry: 5 failures lock the account
        console.login(ADMIN_EMAIL, ADMIN_PASSWORD)  # one failure does not lock
        assert console.logged_in


def test_a_401_after_login_triggers_one_fresh_login(tmp_path: Path) -> None:
    with dify_stack(tmp_path) as stack, logged_in(stack) as console:
        recorder = RequestRecorder(console)
        old_csrf = console.http.cookies["csrf_token"]
        console.http.cookies.clear()  # the session is gone (expired, or the jar was lost)
        assert console.providers() == []
        assert [(s.method, s.path) for s in recorder.sent] == [
            ("GET", "/console/api/workspaces/current/model-providers"),
            ("POST", "/console/api/login"),
            ("GET", "/console/api/workspaces/current/model-providers"),
        ]
        new_csrf = console.http.cookies["csrf_token"]
        assert recorder.sent[-1].headers["X-CSRF-Token"] == new_csrf
        assert "X-CSRF-Token" in recorder.sent[0].headers and old_csrf


def test_an_exported_session_is_resumed_without_a_login_and_a_stale_one_logs_in_again(
    tmp_path: Path,
) -> None:
    with dify_stack(tmp_path) as stack, logged_in(stack) as first:
        saved = json.loads(json.dumps(first.export_session()))  # what a session file would hold
        assert saved["headers"] == {"X-CSRF-Token": first.http.cookies["csrf_token"]}
        assert {cookie["name"] for cookie in saved["cookies"]} == {
            "access_token",
            "refresh_token",
            "csrf_token",
        }

        with DifyConsole(stack.api_url) as resumed:
            resumed.import_session({"base_url": stack.api_url, **saved}, ADMIN_EMAIL, ADMIN_PASSWORD)
            assert resumed.installed_plugins() == {}
        assert stack.calls("POST", "/console/api/login") == 1  # only the first console's login

        fresh: list[dict] = []
        with DifyConsole(stack.api_url) as stale:
            stale.on_login = fresh.append
            stale.import_session(
                {"headers": {"X-CSRF-Token": "expired"}, "cookies": [7, {"name": 3}]},
                ADMIN_EMAIL,
                ADMIN_PASSWORD,
            )
            assert stale.providers() == []
            assert fresh == [stale.export_session()]  # the new session, for the caller to store
        assert stack.calls("POST", "/console/api/login") == 2


def test_host_prefixed_secure_cookies_work_over_plain_http(tmp_path: Path) -> None:
    https_urls = {
        "CONSOLE_API_URL": "https://dify.example.com",
        "CONSOLE_WEB_URL": "https://dify.example.com",
    }
    with dify_stack(tmp_path, api_env=https_urls) as stack, logged_in(stack) as console:
        recorder = RequestRecorder(console)
        names = {cookie.name for cookie in console.http.cookies.jar}
        assert {"__Host-access_token", "__Host-csrf_token", "__Host-refresh_token"} <= names
        assert console.installed_plugins() == {}
        sent = recorder.sent[-1]
        assert "__Host-access_token=" in sent.headers["cookie"]
        assert sent.headers["X-CSRF-Token"] == console.http.cookies["__Host-csrf_token"]
        assert stack.calls("POST", "/console/api/login") == 1  # no 401, no re-login


def test_a_failed_install_task_names_each_plugin(tmp_path: Path) -> None:
    failing = Behaviour(launch_latency=0.1, failures=frozenset({"install:langgenius/xinference"}))
    with dify_stack(tmp_path, daemon_behaviour=failing) as stack, logged_in(stack) as console:
        identifiers = list(console.latest_versions(["langgenius/xinference", "langgenius/localai"]).values())
        task_id = console.install_from_marketplace(identifiers)
        with pytest.raises(PluginInstallFailed) as failed:
            wait_until_done(PluginTaskWait(console, task_id))
        assert [plugin_id for plugin_id, _ in failed.value.failures] == ["langgenius/xinference"]
        assert failed.value.failures[0][1].startswith("failed to install dependencies: ")
        assert f"plugin install task {task_id} failed: langgenius/xinference: failed to install" in str(
            failed.value
        )
        assert failed.value.hint and "PIP_MIRROR_URL" in failed.value.hint


# ---- older 1.x through the fake ---------------------------------------------------------------------


def test_1_9_1_sends_a_plain_password_and_uses_bearer_tokens(tmp_path: Path) -> None:
    with dify_stack(tmp_path, version="1.9.1") as stack, logged_in(stack) as console:
        recorder = RequestRecorder(console)
        assert console.installed_plugins() == {}
        sent = recorder.sent[-1]
        assert sent.headers["Authorization"].startswith("Bearer ")
        assert "X-CSRF-Token" not in sent.headers
        login = [entry for entry in stack.journal() if entry["path"] == "/console/api/login"]
        assert [entry["status"] for entry in login] == [200]  # the plain password was accepted


def test_1_7_1_saves_credentials_with_the_legacy_call(tmp_path: Path, model_servers: ModelServers) -> None:
    with dify_stack(tmp_path, version="1.7.1") as stack, logged_in(stack) as console:
        assert console.uses_credentials_api() is False
        install_official(console, "langgenius/xinference")
        credentials = xinference_credentials(model_servers.xinference, "qwen")
        with pytest.raises(NotSupportedByVersion):
            console.create_credential(XINFERENCE, "qwen", "llm", credentials)
        recorder = RequestRecorder(console)
        console.save_model_legacy(XINFERENCE, "qwen", "llm", credentials)
        assert recorder.last(
            "POST", f"/console/api/workspaces/current/model-providers/{XINFERENCE}/models"
        ).json == {
            "model": "qwen",
            "model_type": "llm",
            "credentials": credentials,
            "load_balancing": {"enabled": False, "configs": []},
        }
        stored = console.model_credentials(XINFERENCE, "qwen", "llm")
        assert stored is not None and stored["credentials"]["model_uid"] == "qwen"
        assert [m["model"] for m in console.provider_models(XINFERENCE)] == ["qwen"]


# ---- branches only a scripted server shows -------------------------------------------------------


def setup_finished() -> httpx.Response:
    return httpx.Response(200, json={"step": "finished", "setup_at": "2025-01-01T00:00:00"})


def test_0x_has_short_provider_ids_no_plugins_plain_setup_and_a_bare_token() -> None:
    server = (
        ScriptedServer(version="0.15.3")
        .on("GET", "/console/api/setup", httpx.Response(200, json={"step": "not_started"}))
        .on("GET", "/console/api/init", httpx.Response(200, json={"status": "finished"}))
        .on("POST", "/console/api/setup", httpx.Response(201, json={"result": "success"}))
        .on("POST", "/console/api/login", httpx.Response(200, json={"result": "success", "data": "jwt-0x"}))
        .on(
            "POST",
            "/console/api/workspaces/current/model-providers/xinference/models",
            httpx.Response(200, json={"result": "success"}),
        )
    )
    with DifyConsole("http://dify.local", transport=server.transport()) as console:
        assert console.version() == (0, 15, 3)
        assert console.provider_id("xinference") == "xinference"
        assert console.has_plugins() is False and console.uses_credentials_api() is False
        console.setup(ADMIN_EMAIL, "admin", ADMIN_PASSWORD)
        assert server.to("POST", "/console/api/setup")[0].json == {
            "email": ADMIN_EMAIL,
            "name": "admin",
            "password": ADMIN_PASSWORD,
        }
        console.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        assert server.to("POST", "/console/api/login")[0].json["password"] == ADMIN_PASSWORD
        with pytest.raises(NotSupportedByVersion):
            console.installed_plugins()
        credentials = {"server_url": "http://xinference:9997", "model_uid": "qwen"}
        console.save_model_legacy("xinference", "qwen", "llm", credentials)
        saved = server.to("POST", "/console/api/workspaces/current/model-providers/xinference/models")[0]
        assert saved.headers["Authorization"] == "Bearer jwt-0x"
        assert saved.json["load_balancing"] == {"enabled": False, "configs": []}


def test_1_5_tokens_come_from_the_login_body() -> None:
    tokens = {"access_token": "access-1", "refresh_token": "refresh-1"}
    server = (
        ScriptedServer(version="1.5.0")
        .on("POST", "/console/api/login", httpx.Response(200, json={"result": "success", "data": tokens}))
        .on("GET", "/console/api/setup", setup_finished())
        .on("GET", "/console/api/workspaces/current/model-providers", httpx.Response(200, json={"data": []}))
    )
    with DifyConsole("http://dify.local", transport=server.transport()) as console:
        console.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        assert console.providers() == []
    sent = server.to("GET", "/console/api/workspaces/current/model-providers")[0]
    assert sent.headers["Authorization"] == "Bearer access-1"
    assert "X-CSRF-Token" not in sent.headers
    assert server.to("POST", "/console/api/login")[0].json == {
        "email": ADMIN_EMAIL,
        "password": ADMIN_PASSWORD,
        "remember_me": True,
    }


def test_1_10_uses_cookies_and_csrf_but_a_plain_password() -> None:
    cookies = [
        ("set-cookie", "access_token=acc; Path=/; HttpOnly; SameSite=Lax"),
        ("set-cookie", "refresh_token=ref; Path=/; HttpOnly; SameSite=Lax"),
        ("set-cookie", "csrf_token=csrf-1; Path=/; SameSite=Lax"),
    ]
    server = (
        ScriptedServer(version="1.10.1")
        .on("GET", "/console/api/setup", setup_finished())
        .on("POST", "/console/api/login", httpx.Response(200, json={"result": "success"}, headers=cookies))
        .on("GET", "/console/api/workspaces/current/model-providers", httpx.Response(200, json={"data": []}))
    )
    with DifyConsole("http://dify.local", transport=server.transport()) as console:
        console.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        console.providers()
    assert server.to("POST", "/console/api/login")[0].json["password"] == ADMIN_PASSWORD
    sent = server.to("GET", "/console/api/workspaces/current/model-providers")[0]
    assert sent.headers["X-CSRF-Token"] == "csrf-1"
    assert "access_token=acc" in sent.headers["cookie"]


def bearer_login() -> httpx.Response:
    return httpx.Response(
        200, json={"result": "success", "data": {"access_token": "a", "refresh_token": "r"}}
    )


def test_installed_plugins_reads_every_page_and_the_unpaginated_1_0_shape() -> None:
    plugins = [
        {"plugin_id": f"org/plugin-{i}", "plugin_unique_identifier": f"org/plugin-{i}:1.0.0@x"}
        for i in range(300)
    ]

    def paginated(request: httpx.Request) -> httpx.Response:
        page, size = int(request.url.params["page"]), int(request.url.params["page_size"])
        return httpx.Response(200, json={"plugins": plugins[(page - 1) * size : page * size], "total": 300})

    list_path = "/console/api/workspaces/current/plugin/list"
    server = (
        ScriptedServer(version="1.9.0")
        .on("GET", "/console/api/setup", setup_finished())
        .on("POST", "/console/api/login", bearer_login())
        .on("GET", list_path, paginated)
    )
    with DifyConsole("http://dify.local", transport=server.transport()) as console:
        console.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        installed = console.installed_plugins()
    assert (
        len(installed) == 300
        and installed["org/plugin-299"]["plugin_unique_identifier"] == "org/plugin-299:1.0.0@x"
    )
    assert [s.query for s in server.to("GET", list_path)] == [
        {"page": "1", "page_size": "256"},
        {"page": "2", "page_size": "256"},
    ]

    first = ScriptedServer(version="1.0.0")
    first.on("GET", "/console/api/setup", setup_finished()).on("POST", "/console/api/login", bearer_login())
    first.on("GET", list_path, httpx.Response(200, json={"plugins": plugins[:2]}))
    with DifyConsole("http://dify.local", transport=first.transport()) as console:
        console.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        assert list(console.installed_plugins()) == ["org/plugin-0", "org/plugin-1"]
    assert len(first.to("GET", list_path)) == 1


def test_version_comes_from_x_version_once_or_from_health() -> None:
    server = ScriptedServer(version="1.13.3").on("GET", "/console/api/setup", setup_finished())
    with DifyConsole("http://dify.local", transport=server.transport()) as console:
        assert console.version() == (1, 13, 3)
        assert console.version() == (1, 13, 3)
    assert len(server.sent) == 1

    headerless = (
        ScriptedServer()
        .on("GET", "/console/api/setup", setup_finished())
        .on("GET", "/health", httpx.Response(200, json={"pid": 1, "status": "ok", "version": "1.4.2"}))
    )
    with DifyConsole("http://api:5001", transport=headerless.transport()) as console:
        assert console.version() == (1, 4, 2)

    unknown = ScriptedServer().on("GET", "/console/api/setup", setup_finished())
    with (
        DifyConsole("http://dify.local", transport=unknown.transport()) as console,
        pytest.raises(DifystackError) as failed,
    ):
        console.version()
    assert "cannot tell which Dify version answers at http://dify.local" in str(failed.value)


def test_429_lockout_is_not_retried() -> None:
    locked = dify_error(429, "email_code_login_limit", "Too many incorrect password attempts.")
    server = (
        ScriptedServer(version="1.13.3")
        .on("GET", "/console/api/setup", setup_finished())
        .on("POST", "/console/api/login", locked)
    )
    with (
        DifyConsole("http://dify.local", transport=server.transport()) as console,
        pytest.raises(LoginLocked) as failed,
    ):
        console.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    assert "Too many incorrect password attempts." in str(failed.value)
    assert len(server.to("POST", "/console/api/login")) == 1


def test_an_undecodable_password_is_reported_as_an_encoding_problem() -> None:
    server = (
        ScriptedServer(version="1.11.1")
        .on("GET", "/console/api/setup", setup_finished())
        .on("POST", "/console/api/login", dify_error(401, "authentication_failed", "Invalid encrypted data"))
    )
    with (
        DifyConsole("http://dify.local", transport=server.transport()) as console,
        pytest.raises(LoginFailed) as failed,
    ):
        console.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    assert "could not decode the password" in str(failed.value)
    assert "sent as base64 because the server reports version 1.11.1" in str(failed.value)
    assert server.to("POST", "/console/api/login")[0].json["password"] == "UGFzc3cwcmQxMjM="


def test_a_login_answered_502_is_not_retried_either() -> None:
    server = (
        ScriptedServer(version="1.13.3")
        .on("GET", "/console/api/setup", setup_finished())
        .on("POST", "/console/api/login", httpx.Response(502, text="Bad Gateway"))
    )
    with (
        DifyConsole("http://dify.local", transport=server.transport()) as console,
        pytest.raises(TransientHttpError) as failed,
    ):
        console.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    assert str(failed.value).startswith(
        f"Dify login as {ADMIN_EMAIL}: dify: POST http://dify.local/console/api/login"
    )
    assert len(server.to("POST", "/console/api/login")) == 1


def test_a_401_that_persists_after_a_fresh_login_fails_after_two_logins() -> None:
    server = (
        ScriptedServer(version="1.9.0")
        .on("GET", "/console/api/setup", setup_finished())
        .on("POST", "/console/api/login", bearer_login())
        .on(
            "GET",
            "/console/api/workspaces/current/model-providers",
            dify_error(401, "unauthorized", "Unauthorized."),
        )
    )
    with DifyConsole("http://dify.local", transport=server.transport()) as console:
        console.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        with pytest.raises(HttpError) as failed:
            console.providers()
    assert failed.value.status == 401
    assert "list Dify model providers (after logging in again)" in str(failed.value)
    assert len(server.to("POST", "/console/api/login")) == 2
    assert len(server.to("GET", "/console/api/workspaces/current/model-providers")) == 2


def test_transient_503_is_retried_for_reads_but_not_for_credential_writes() -> None:
    unavailable = httpx.Response(503, text="<html>503 Service Temporarily Unavailable</html>")
    credentials_path = CREDENTIALS.format(XINFERENCE)
    server = (
        ScriptedServer(version="1.9.0")
        .on("GET", "/console/api/setup", setup_finished())
        .on("POST", "/console/api/login", bearer_login())
        .on(
            "GET",
            "/console/api/workspaces/current/model-providers",
            unavailable,
            httpx.Response(200, json={"data": []}),
        )
        .on("POST", credentials_path, httpx.Response(502, text="Bad Gateway"))
    )
    with DifyConsole("http://dify.local", transport=server.transport()) as console:
        console.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        assert console.providers() == []
        with pytest.raises(TransientHttpError):
            console.create_credential(XINFERENCE, "qwen", "llm", {"server_url": "http://x:9997"})
    assert len(server.to("GET", "/console/api/workspaces/current/model-providers")) == 2
    assert len(server.to("POST", credentials_path)) == 1


def test_a_plugin_task_that_never_ends_times_out_naming_what_is_pending() -> None:
    running = {
        "task": {
            "id": "t1",
            "status": "running",
            "plugins": [{"plugin_id": "langgenius/xinference", "status": "running"}],
        }
    }
    server = (
        ScriptedServer(version="1.9.0")
        .on("GET", "/console/api/setup", setup_finished())
        .on("POST", "/console/api/login", bearer_login())
        .on("GET", "/console/api/workspaces/current/plugin/tasks/t1", httpx.Response(200, json=running))
    )
    with DifyConsole("http://dify.local", transport=server.transport()) as console:
        console.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        status = wait_until_done(PluginTaskWait(console, "t1"), timeout=0.15, stall_timeout=10)
    assert status.state == "timeout"
    assert (
        status.detail
        == "install task running, 0/1 plugins (langgenius/xinference: running) (gave up after 0s)"
    )


def test_unreachable_dify_is_a_transient_error_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with DifyConsole(url, retry_attempts=2) as console, pytest.raises(TransientHttpError) as refused:
        console.version()
    assert f"{url}/console/api/setup" in str(refused.value) and "cannot connect" in str(refused.value)


def test_console_calls_need_a_login_first() -> None:
    server = ScriptedServer(version="1.13.3").on("GET", "/console/api/setup", setup_finished())
    with (
        DifyConsole("http://dify.local", transport=server.transport()) as console,
        pytest.raises(DifystackError, match="not logged in to Dify"),
    ):
        console.providers()
    assert server.sent == []


@pytest.mark.parametrize("stored_meanwhile", [True, False], ids=["stored", "not-stored"])
def test_a_credential_post_waits_long_and_a_read_timeout_re_reads_the_credential(
    stored_meanwhile: bool,
) -> None:
    credentials_path = CREDENTIALS.format(XINFERENCE)
    read_timeouts: list[float] = []

    def slow_validation(request: httpx.Request) -> httpx.Response:
        read_timeouts.append(request.extensions["timeout"]["read"])
        raise httpx.ReadTimeout("timed out", request=request)

    record = {
        "current_credential_id": "c1",
        "available_credentials": [{"credential_id": "c1", "credential_name": "difystack"}],
        "credentials": {"server_url": "http://x:9997"},
    }
    server = (
        ScriptedServer(version="1.9.0")
        .on("GET", "/console/api/setup", setup_finished())
        .on("POST", "/console/api/login", bearer_login())
        .on("POST", credentials_path, slow_validation)
        .on("GET", credentials_path, httpx.Response(200, json=record if stored_meanwhile else {}))
    )
    with DifyConsole("http://dify.local", transport=server.transport()) as console:
        console.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        create = lambda: console.create_credential(  # noqa: E731
            XINFERENCE, "qwen", "llm", {"server_url": "http://x:9997"}, name="difystack"
        )
        if stored_meanwhile:
            create()
        else:
            with pytest.raises(TransientHttpError, match="timed out"):
                create()
    assert read_timeouts == [CREDENTIAL_VALIDATION_TIMEOUT]
    assert CREDENTIAL_VALIDATION_TIMEOUT >= 3 * 60
    assert len(server.to("GET", credentials_path)) == 1
