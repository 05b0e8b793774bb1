"""XinferenceClient against the fake Xinference 4.1.0 (reference: xinference-localai-api.md PART A)."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from difystack.clients.http import CallJournal, HttpError, TransientHttpError
from difystack.clients.xinference import (
    ModelLoading,
    XinferenceAdminExists,
    XinferenceClient,
    XinferenceLoginFailed,
    check_launchable,
)
from difystack.fakes.behaviour import Behaviour
from difystack.fakes.xinference import create_app
from tests.clients import RequestRecorder, ScriptedServer
from tests.conftest import free_port, serve_app

LAUNCH_LATENCY = 0.8
QWEN_GGUF = {
    "model_name": "qwen2.5-instruct",
    "model_type": "LLM",
    "model_engine": "llama.cpp",
    "model_format": "ggufv2",
    "model_size_in_billions": "0_5",
    "quantization": "q4_k_m",
}


@pytest.fixture(scope="module")
def xinference_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fake Xinference without auth whose launches take LAUNCH_LATENCY seconds."""
    home = tmp_path_factory.mktemp("xinference-home")
    env = {"XINFERENCE_HOME": str(home), "XINFERENCE_AUTH_ADVANCED": "false"}
    with serve_app(create_app(Behaviour(launch_latency=LAUNCH_LATENCY), env)) as url:
        yield url


@pytest.fixture
def client(xinference_url: str) -> Iterator[XinferenceClient]:
    with XinferenceClient(xinference_url) as xinference:
        yield xinference


def wait_until_described(client: XinferenceClient, uid: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            description = client.describe(uid)
        except ModelLoading:
            assert time.monotonic() < deadline, f"{uid} still loading"
            time.sleep(0.05)
            continue
        assert description is not None
        return description


# ---- lifecycle and inference --------------------------------------------------------------------


def test_launch_without_waiting_then_describe_goes_from_503_to_ready_and_embeds(
    client: XinferenceClient,
) -> None:
    recorder = RequestRecorder(client)
    body = {"model_uid": "emb-1", "model_name": "bge-small-en-v1.5", "model_type": "embedding"}
    assert client.launch(body, wait_ready=False) == "emb-1"
    launch = recorder.last("POST", "/v1/models")
    assert launch.query == {"wait_ready": "false"}
    assert launch.json == body

    # Returned before the model loaded: it is still loading.
    with pytest.raises(ModelLoading) as loading:
        client.describe("emb-1")
    assert loading.value.status == 503
    assert loading.value.retry_after == 30
    assert "Model is loading, please retry later" in str(loading.value)
    assert "describe xinference model uid emb-1" in str(loading.value)
    assert len(recorder.to("GET", "/v1/models/emb-1")) == 1  # a loading model is not retried blindly
    assert isinstance(loading.value, TransientHttpError)

    assert [row["status"] for row in client.instances("emb-1")] in (["CREATING"], ["LOADING"])
    assert recorder.last("GET", "/v1/models/instances").query == {"model_uid": "emb-1"}
    assert 0.0 <= client.progress("emb-1")["progress"] < 1.0

    description = wait_until_described(client, "emb-1")
    assert description["model_type"] == "embedding"
    assert description["dimensions"] == 384
    assert client.running_models()["emb-1"]["model_name"] == "bge-small-en-v1.5"
    assert client.progress("emb-1")["progress"] == 1.0

    embeddings = client.embed("emb-1", ["hello world", "xinference test"])
    assert recorder.last("POST", "/v1/embeddings").json == {
        "model": "emb-1",
        "input": ["hello world", "xinference test"],
    }
    assert embeddings.dimensions == 384
    assert len(embeddings.vectors) == 2 and all(len(vector) == 384 for vector in embeddings.vectors)
    assert embeddings.vectors[0] != embeddings.vectors[1]
    assert math.isclose(math.sqrt(sum(v * v for v in embeddings.vectors[0])), 1.0, rel_tol=1e-6)
    assert embeddings.total_tokens > 0

    client.terminate("emb-1")
    assert recorder.last("DELETE", "/v1/models/emb-1")
    assert client.describe("emb-1") is None
    assert "emb-1" not in client.running_models()


def test_blocking_launch_of_a_gguf_llm_then_chat(client: XinferenceClient) -> None:
    recorder = RequestRecorder(client)
    uid = client.launch({**QWEN_GGUF, "model_uid": "qwen-chat"}, wait_ready=True)
    assert uid == "qwen-chat"
    assert recorder.last("POST", "/v1/models").query == {"wait_ready": "true"}
    assert client.describe(uid)["model_ability"] == ["chat", "tools"]  # loaded when launch returned

    completion = client.chat(uid, "Hello there", max_tokens=8)
    assert recorder.last("POST", "/v1/chat/completions").json == {
        "model": "qwen-chat",
        "messages": [{"role": "user", "content": "Hello there"}],
        "max_tokens": 8,
    }
    assert completion.text == "This is a fake reply from qwen2.5-instruct. You"
    assert completion.total_tokens > 8
    client.terminate(uid)


def test_failed_launch_names_the_model_carries_the_server_text_and_is_not_retried(
    client: XinferenceClient,
) -> None:
    recorder = RequestRecorder(client)
    with pytest.raises(HttpError) as failed:
        client.launch({**QWEN_GGUF, "model_uid": "bad", "model_engine": "vLLM"}, wait_ready=True)
    message = str(failed.value)
    assert failed.value.status == 400
    assert message.startswith("launch of xinference model qwen2.5-instruct as uid bad: xinference: POST ")
    assert "Model qwen2.5-instruct cannot be run on engine vLLM" in message
    assert len(recorder.to("POST", "/v1/models")) == 1


def test_unknown_uid_describes_as_none_but_terminating_it_is_an_error(client: XinferenceClient) -> None:
    assert client.describe("ghost") is None
    with pytest.raises(HttpError) as failed:
        client.terminate("ghost")
    assert "terminate xinference uid ghost" in str(failed.value)
    assert "Model not found in the model list, uid: ghost" in failed.value.server_message


def test_status_reports_the_worker_and_reads_are_journaled_as_non_mutating(xinference_url: str) -> None:
    journal = CallJournal()
    with XinferenceClient(xinference_url, journal=journal) as client:
        status = client.status()
        assert status["workers"] and status["uptime"] >= 0
        assert client.auth_enabled() is False
        assert client.version() == "4.1.0"
        client.running_models()
    host = xinference_url.removeprefix("http://")
    assert journal.calls == [
        ("GET", f"{host}/status"),
        ("GET", f"{host}/v1/cluster/auth"),
        ("GET", f"{host}/v1/cluster/version"),
        ("GET", f"{host}/v1/models"),
    ]
    assert journal.mutating == []


# ---- validation before launch (A4) ----------------------------------------------------------------


def test_check_launchable_gives_precise_reasons(client: XinferenceClient) -> None:
    unknown = check_launchable(client, "LLM", "no-such-model", "llama.cpp", "ggufv2", "0_5", "q4_k_m")
    assert unknown is not None
    assert unknown.startswith("xinference has no LLM model named no-such-model (known: ")
    assert "qwen2.5-instruct" in unknown

    vllm = check_launchable(client, "LLM", "qwen2.5-instruct", "vLLM", "ggufv2", "0_5", "q4_k_m")
    assert (
        vllm
        == "engine vLLM is not usable for qwen2.5-instruct: Failed to import vLLM: No module named 'vllm'"
    )

    wrong_quantization = check_launchable(
        client, "LLM", "qwen2.5-instruct", "llama.cpp", "ggufv2", "0_5", "q8"
    )
    assert wrong_quantization is not None
    assert wrong_quantization.startswith(
        "qwen2.5-instruct has no ggufv2 0_5 q8 for engine llama.cpp (available: "
    )
    assert "ggufv2 0_5 [q2_k, q3_k_m, q4_0, q4_k_m, q5_0, q5_k_m, q6_k, q8_0]" in wrong_quantization

    as_float = check_launchable(client, "LLM", "qwen2.5-instruct", "llama.cpp", "ggufv2", 0.5, "q4_k_m")
    assert as_float is not None and "has no ggufv2 0.5 q4_k_m" in as_float  # "0_5" is not 0.5

    wrong_case = check_launchable(client, "LLM", "qwen3", "llama.cpp", "ggufv2", "0_6", "q4_k_m")
    assert wrong_case is not None and wrong_case.endswith("did you mean Q4_K_M?")

    assert check_launchable(client, "LLM", "qwen2.5-instruct", "LLAMA.CPP", "ggufv2", "0_5", "q4_k_m") is None
    assert (
        check_launchable(client, "LLM", "qwen2.5-instruct", "Transformers", "pytorch", "1_5", "none") is None
    )
    assert check_launchable(client, "embedding", "bge-small-en-v1.5", None, None, None, None) is None


# ---- custom registrations (A3) ------------------------------------------------------------------


def test_custom_embedding_registration_round_trip(client: XinferenceClient, tmp_path: Path) -> None:
    model_dir = tmp_path / "all-MiniLM-L6-v2"
    model_dir.mkdir()
    spec = {
        "version": 2,
        "model_name": "my-minilm",
        "dimensions": 384,
        "max_tokens": 256,
        "language": ["en"],
        "model_specs": [
            {
                "model_format": "pytorch",
                "model_id": None,
                "model_uri": f"file://{model_dir}",
                "quantization": "none",
            }
        ],
    }
    recorder = RequestRecorder(client)
    assert client.registration("embedding", "my-minilm") is None
    client.register("embedding", spec)
    sent = recorder.last("POST", "/v1/model_registrations/embedding").json
    assert set(sent) == {"model", "worker_ip", "persist"}
    assert isinstance(sent["model"], str) and json.loads(sent["model"]) == spec  # a JSON string (A3.1)
    assert sent["persist"] is True and sent["worker_ip"] is None

    assert "my-minilm" in client.registrations("embedding")
    assert recorder.last("GET", "/v1/model_registrations/embedding").query == {"detailed": "false"}
    registered = client.registration("embedding", "my-minilm")
    assert registered is not None and registered["is_builtin"] is False
    assert registered["dimensions"] == 384
    assert registered["model_specs"][0]["model_uri"] == f"file://{model_dir}"

    assert client.engines("my-minilm", "embedding") == {
        "sentence_transformers": [
            {"model_name": "my-minilm", "model_format": "pytorch", "quantization": "none"}
        ]
    }
    assert recorder.sent[-1].path == "/v1/engines/embedding/my-minilm"

    uid = client.launch(
        {"model_uid": "minilm", "model_name": "my-minilm", "model_type": "embedding"}, wait_ready=True
    )
    assert client.embed(uid, ["ping"]).dimensions == 384
    client.terminate(uid)

    client.unregister("embedding", "my-minilm")
    assert recorder.last("DELETE", "/v1/model_registrations/embedding/my-minilm")
    assert client.registration("embedding", "my-minilm") is None
    assert "my-minilm" not in client.registrations("embedding")


def test_rejected_registration_names_the_model_and_quotes_the_server(client: XinferenceClient) -> None:
    spec = {
        "version": 2,
        "model_name": "broken",
        "dimensions": 384,
        "max_tokens": 256,
        "language": ["en"],
        "model_specs": [
            {"model_format": "pytorch", "model_uri": "file:///does/not/exist", "quantization": "none"}
        ],
    }
    with pytest.raises(HttpError) as failed:
        client.register("embedding", spec, persist=False)
    assert str(failed.value).startswith("register xinference embedding model broken: ")
    assert "Invalid model URI file:///does/not/exist" in failed.value.server_message


def test_llm_engines_for_a_custom_model_use_the_typed_route(client: XinferenceClient, tmp_path: Path) -> None:
    spec = {
        "version": 2,
        "model_name": "my-qwen",
        "model_family": "qwen2.5-instruct",
        "model_lang": ["en"],
        "model_ability": ["chat"],
        "context_length": 4096,
        "model_specs": [
            {
                "model_format": "ggufv2",
                "model_size_in_billions": "0_5",
                "quantization": "Q4_K_M",
                "model_uri": str(tmp_path),
                "model_file_name_template": "my-qwen-{quantization}.gguf",
            }
        ],
    }
    client.register("LLM", spec, persist=False)
    try:
        recorder = RequestRecorder(client)
        assert check_launchable(client, "LLM", "my-qwen", "llama.cpp", "ggufv2", "0_5", "Q4_K_M") is None
        assert [s.path for s in recorder.sent] == ["/v1/model_registrations/LLM", "/v1/engines/LLM/my-qwen"]
    finally:
        client.unregister("LLM", "my-qwen")


# ---- auth bootstrap (A6, 4.1.0) -------------------------------------------------------------------


def test_auth_bootstrap_setup_login_and_api_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "xinference-home"
    app = create_app(Behaviour(), {"XINFERENCE_HOME": str(home)})
    # The fake documents two places: the FIRST-RUN banner on stdout and auth.db's system_config.
    match = re.search(r"Setup token: (\S+)", capsys.readouterr().out)
    assert match, "the fake printed no setup token"
    setup_token = match.group(1)
    with sqlite3.connect(home / "auth" / "auth.db") as db:
        stored = db.execute("SELECT value FROM system_config WHERE key = 'setup_token'").fetchone()
    assert stored == (setup_token,)

    with serve_app(app) as url, XinferenceClient(url) as anonymous:
        recorder = RequestRecorder(anonymous)
        assert anonymous.auth_enabled() is True
        assert anonymous.setup_status()["needs_setup"] is True
        with pytest.raises(HttpError) as refused:
            anonymous.running_models()
        assert refused.value.status == 401 and "Could not validate credentials" in str(refused.value)
        assert refused.value.hint and "authentication on" in refused.value.hint

        with pytest.raises(HttpError) as bad_token:
            anonymous.setup_admin("not-the-token", "admin", "admin-pass-123")
        assert bad_token.value.server_message == "Invalid setup token."
        assert bad_token.value.hint and "auth.db" in bad_token.value.hint
        anonymous.setup_admin(setup_token, "admin", "admin-pass-123")
        assert recorder.last("POST", "/v1/admin/setup").json == {
            "setup_token": setup_token,
            "username": "admin",
            "password": "admin-pass-123",
        }
        assert anonymous.setup_status()["needs_setup"] is False
        with pytest.raises(XinferenceAdminExists):
            anonymous.setup_admin(setup_token, "admin", "admin-pass-123")

        with pytest.raises(XinferenceLoginFailed) as wrong:
            anonymous.login("admin", "wrong-password")
        assert "Incorrect username or password" in str(wrong.value)
        assert len(recorder.to("POST", "/token")) == 1  # a failed login is not retried

        admin_token = anonymous.login("admin", "admin-pass-123")
        assert recorder.last("POST", "/token").json == {"username": "admin", "password": "admin-pass-123"}
        api_key = anonymous.create_api_key(admin_token, "difystack")
        assert api_key.startswith("xf-")
        assert recorder.last("POST", "/v1/admin/keys").headers["Authorization"] == f"Bearer {admin_token}"
        assert "Authorization" not in recorder.last("GET", "/v1/admin/setup/status").headers

        with XinferenceClient(url, api_key=api_key) as keyed:
            keyed_recorder = RequestRecorder(keyed)
            assert keyed.running_models() == {}
            assert keyed_recorder.sent[-1].headers["Authorization"] == f"Bearer {api_key}"
            assert keyed.version() is None  # admin scope only
            with pytest.raises(HttpError) as forbidden:
                keyed.launch({"model_name": "bge-small-en-v1.5", "model_type": "embedding"})
            assert forbidden.value.status == 403
            assert "API keys can only access model query and inference endpoints" in str(forbidden.value)
            assert forbidden.value.hint and "admin's access token" in forbidden.value.hint
            keyed.use_token(admin_token)
            assert keyed.version() == "4.1.0"


# ---- branches the fake does not cover -------------------------------------------------------------


def test_servers_without_the_auth_endpoint_have_no_auth() -> None:
    server = ScriptedServer().on("GET", "/v1/cluster/auth", httpx.Response(404, json={"detail": "Not Found"}))
    with XinferenceClient("http://xinference:9997", transport=server.transport()) as client:
        assert client.auth_enabled() is False


def test_old_servers_answer_400_for_unknown_engines_and_lack_the_typed_route() -> None:
    server = (
        ScriptedServer()
        .on("GET", "/v1/engines/LLM/ghost", httpx.Response(404, json={"detail": "Not Found"}))
        .on("GET", "/v1/engines/ghost", httpx.Response(400, json={"detail": "Model ghost not found"}))
    )
    with XinferenceClient("http://xinference:9997", transport=server.transport()) as client:
        assert client.engines("ghost", "LLM") is None
    assert [(s.method, s.path) for s in server.sent] == [
        ("GET", "/v1/engines/LLM/ghost"),
        ("GET", "/v1/engines/ghost"),
    ]


def test_unreachable_server_is_a_transient_error_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with XinferenceClient(url, retry_attempts=2) as client, pytest.raises(TransientHttpError) as refused:
        client.status()
    assert refused.value.status is None
    assert f"{url}/status" in str(refused.value) and "cannot connect" in str(refused.value)
