"""``langgenius/xinference`` 0.0.15 as the fake plugin daemon runs it (reference notes §6.1).

``XinferenceHelper`` describes the model (``GET {server_url}/v1/models/{uid}``, Bearer
api_key only when set, 10 s timeout, 3 connection retries) and caches the result in-process
for ``cache_ttl`` seconds keyed by the uid only; the model classes add the calls of
``xinference_client.Client`` (``/v1/cluster/auth``, describe, ``/v1/embeddings``, ...).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from difystack.fakes.dify_plugin_runtime import (
    DEMO_AUDIO,
    LLM_PARAMETER_RULES,
    ConnectionError_,
    CredentialsValidateFailedError,
    InvokeAuthorizationError,
    InvokeBadRequestError,
    ai_model_entity,
    check_scheme,
    get_with_connect_retries,
    http_client,
    join_url,
    json_or_none,
    requests_error_text,
)

RERANK_PROBE_QUERY = "Whose kasumi"
RERANK_PROBE_DOCS = [
    'Kasumi is a girl\'s name of Japanese origin meaning "mist".',
    "Her music is a kawaii bass, a mix of future bass, pop, and kawaii music ",
    "and she leads a team named PopiParty.",
]


@dataclass
class XinferenceExtraParameter:
    model_format: str
    model_handle_type: str
    model_ability: list[str]
    support_function_call: bool
    support_vision: bool
    max_tokens: int
    context_length: int
    model_family: str | None


def _valid_model_uid(credentials: Mapping[str, Any]) -> bool:
    return not any(char in str(credentials.get("model_uid", "")) for char in "/?#")


def _handle_type(description: Mapping[str, Any], ability: list[str]) -> str:
    model_type = description.get("model_type")
    if model_type == "embedding":
        return "embedding"
    if model_type == "audio":
        family = description.get("model_family")
        ability.append(
            "text-to-audio" if family in {"ChatTTS", "CosyVoice", "FishAudio"} else "audio-to-text"
        )
        return "audio"
    if description.get("model_format", "ggmlv3") == "ggmlv3" and "chatglm" in description["model_name"]:
        return "chatglm"
    if "generate" in ability:
        return "generate"
    if "chat" in ability:
        return "chat"
    raise NotImplementedError("xinference model handle type is not supported")


@dataclass
class XinferenceRuntime:
    """``XinferenceHelper`` (with its in-process describe cache keyed by uid) + model classes."""

    cache_ttl: float = 300.0
    _describe_cache: dict[str, tuple[float, XinferenceExtraParameter]] = field(default_factory=dict)

    async def extra_parameter(
        self, server_url: str, model_uid: str, api_key: str
    ) -> XinferenceExtraParameter:
        now = time.monotonic()
        for uid in [uid for uid, (expires, _) in self._describe_cache.items() if expires < now]:
            del self._describe_cache[uid]
        if model_uid not in self._describe_cache:
            value = await self._fetch_extra_parameter(server_url, model_uid, api_key)
            self._describe_cache[model_uid] = (now + self.cache_ttl, value)
        return self._describe_cache[model_uid][1]

    async def _fetch_extra_parameter(
        self, server_url: str, model_uid: str, api_key: str
    ) -> XinferenceExtraParameter:
        if not model_uid or not model_uid.strip() or not server_url or not server_url.strip():
            raise RuntimeError("model_uid is empty")
        url = join_url(server_url, "v1", "models", model_uid)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            check_scheme(url)
            response = await get_with_connect_retries(url, headers, timeout=10, retries=3)
        except httpx.HTTPError as exc:
            error = requests_error_text(url, exc, 10)
            raise RuntimeError(
                f"get xinference model extra parameter failed, url: {url}, error: {error}"
            ) from exc
        except RuntimeError as exc:
            raise RuntimeError(
                f"get xinference model extra parameter failed, url: {url}, error: {exc}"
            ) from exc
        if response.status_code != 200:
            raise RuntimeError(
                f"get xinference model extra parameter failed, status code: {response.status_code},"
                f" response: {response.text}"
            )
        description = response.json()
        ability = list(description.get("model_ability", []))
        handle_type = _handle_type(description, ability)
        return XinferenceExtraParameter(
            model_format=description.get("model_format", "ggmlv3"),
            model_handle_type=handle_type,
            model_ability=ability,
            support_function_call="tools" in ability,
            support_vision="vision" in ability,
            max_tokens=description.get("max_tokens", 512),
            context_length=description.get("context_length", 2048),
            model_family=description.get("model_family"),
        )

    async def validate_credentials(self, model_type: str, model: str, credentials: dict[str, Any]) -> None:
        validators = {
            "llm": self._validate_llm,
            "text-embedding": self._validate_text_embedding,
            "rerank": self._validate_rerank,
            "speech2text": self._validate_speech2text,
            "tts": self._validate_tts,
        }
        if model_type not in validators:
            raise ValueError(f"model type {model_type} is not supported by provider xinference")
        await validators[model_type](model, credentials)

    async def _validate_llm(self, model: str, credentials: dict[str, Any]) -> None:
        try:
            _require_valid_uid(credentials)
            extra = await self.extra_parameter(
                credentials["server_url"], credentials["model_uid"], credentials.get("api_key", "")
            )
            if "completion_type" not in credentials:
                if "chat" in extra.model_ability:
                    credentials["completion_type"] = "chat"
                elif "generate" in extra.model_ability:
                    credentials["completion_type"] = "completion"
                else:
                    raise ValueError(
                        f"xinference model ability {extra.model_ability} is not supported,"
                        " check if you have the right model type"
                    )
            if extra.support_function_call:
                credentials["support_function_call"] = True
            if extra.support_vision:
                credentials["support_vision"] = True
            if extra.context_length:
                credentials["context_length"] = extra.context_length
        except (RuntimeError, KeyError) as exc:
            raise CredentialsValidateFailedError(f"Xinference credentials validate failed: {exc}") from exc

    async def _validate_text_embedding(self, model: str, credentials: dict[str, Any]) -> None:
        try:
            _require_valid_uid(credentials)
            server_url = credentials["server_url"]
            model_uid = credentials["model_uid"]
            api_key = credentials.get("api_key")
            extra = await self.extra_parameter(server_url, model_uid, api_key or "")
            if extra.max_tokens:
                credentials["max_tokens"] = extra.max_tokens
            client = await XinferenceClient.connect(server_url.removesuffix("/"), api_key)
            try:
                description = await client.describe(model_uid)
            except RuntimeError as exc:
                raise InvokeAuthorizationError(str(exc)) from exc
            if description.get("model_type") != "embedding":
                raise InvokeBadRequestError(
                    "please check model type, the model you want to invoke is not a text embedding model"
                )
            result = await client.post_json(
                "/v1/embeddings", {"model": model_uid, "input": ["ping"]}, "embeddings"
            )
            _ = [item["embedding"] for item in result["data"]]
            _ = result["usage"]["total_tokens"]
        except InvokeAuthorizationError as exc:
            raise CredentialsValidateFailedError(
                f"Failed to validate credentials for model {model}: {exc}"
            ) from exc
        except RuntimeError as exc:
            raise CredentialsValidateFailedError(str(exc)) from exc

    async def _validate_rerank(self, model: str, credentials: dict[str, Any]) -> None:
        try:
            _require_valid_uid(credentials)
            client, model_uid = await _connect_checking_type(credentials, "rerank", "rerank")
            body = {
                "model": model_uid,
                "documents": RERANK_PROBE_DOCS,
                "query": RERANK_PROBE_QUERY,
                "top_n": None,
                "max_chunks_per_doc": None,
                "return_documents": True,
                "return_len": None,
            }
            result = await client.post_json("/v1/rerank", body, "rerank")
            for item in result["results"]:
                document = item["document"]
                _ = (
                    item["index"],
                    item["relevance_score"],
                    document["text"] if isinstance(document, dict) else document,
                )
        except Exception as exc:
            raise CredentialsValidateFailedError(str(exc)) from exc

    async def _validate_speech2text(self, model: str, credentials: dict[str, Any]) -> None:
        try:
            _require_valid_uid(credentials)
            client, model_uid = await _connect_checking_type(credentials, "audio", "audio")
            result = await client.post_multipart(
                "/v1/audio/transcriptions",
                {"model": model_uid, "response_format": "verbose_json", "temperature": "0"},
                {"file": ("audio.wav", DEMO_AUDIO)},
                "transcribe the audio",
            )
            _ = result["text"]
        except Exception as exc:
            raise CredentialsValidateFailedError(str(exc)) from exc

    async def _validate_tts(self, model: str, credentials: dict[str, Any]) -> None:
        try:
            _require_valid_uid(credentials)
            extra = await self.extra_parameter(
                credentials["server_url"], credentials["model_uid"], credentials.get("api_key", "")
            )
            if not {"text-to-audio", "text2audio"} & set(extra.model_ability):
                raise InvokeBadRequestError(
                    "please check model type, the model you want to invoke is not a text-to-audio model"
                )
            credentials["audio_model_name"] = extra.model_family
            # The plugin builds a streaming generator here that validation never iterates,
            # so no /v1/audio/speech call is made.
        except Exception as exc:
            raise CredentialsValidateFailedError(str(exc)) from exc

    async def model_schema(
        self, model_type: str, model: str, credentials: Mapping[str, Any]
    ) -> dict[str, Any]:
        if model_type == "llm":
            completion_type = credentials.get("completion_type")
            if completion_type is None:
                extra = await self.extra_parameter(
                    credentials["server_url"], credentials["model_uid"], credentials.get("api_key", "")
                )
                completion_type = "chat" if "chat" in extra.model_ability else "completion"
            modes = {"chat": "chat", "completion": "completion"}
            if completion_type not in modes:
                raise ValueError(f"completion_type {completion_type} is not supported")
            features = []
            if credentials.get("support_function_call"):
                features.append("tool-call")
            if credentials.get("support_vision"):
                features.append("vision")
            properties = {
                "mode": modes[completion_type],
                "context_size": credentials.get("context_length", 2048),
            }
            return ai_model_entity(model, "llm", properties, features, LLM_PARAMETER_RULES)
        if model_type == "text-embedding":
            properties = {"context_size": int(credentials.get("max_tokens", 512)), "max_chunks": 1}
            return ai_model_entity(model, model_type, properties)
        if model_type == "tts":
            properties = {
                "audio_type": "mp3",
                "max_workers": 5,
                "word_limit": 3500,
                "default_voice": "default",
            }
            return ai_model_entity(model, model_type, properties)
        return ai_model_entity(model, model_type, {})


@dataclass
class XinferenceClient:
    """The subset of ``xinference_client.Client`` the plugin uses (plain ``requests`` calls)."""

    base_url: str
    api_key: str | None
    headers: dict[str, str]

    @classmethod
    async def connect(cls, base_url: str, api_key: str | None) -> XinferenceClient:
        url = f"{base_url}/v1/cluster/auth"
        response = await _plain_request("GET", url)
        if response.status_code == 404:  # older servers: no auth endpoint
            authed = False
        elif response.status_code != 200:
            raise RuntimeError(f"Failed to get cluster information, detail: {_detail(response)}")
        else:
            authed = bool(response.json()["auth"])
        headers = {"Authorization": f"Bearer {api_key}"} if api_key is not None and authed else {}
        return cls(base_url=base_url, api_key=api_key, headers=headers)

    async def describe(self, model_uid: str) -> dict[str, Any]:
        response = await _plain_request("GET", f"{self.base_url}/v1/models/{model_uid}", headers=self.headers)
        if response.status_code != 200:
            raise RuntimeError(f"Failed to get the model description, detail: {_detail(response)}")
        description = response.json()
        if description.get("model_type") not in {"LLM", "embedding", "rerank", "audio", "image", "video"}:
            raise ValueError(f"Unknown model type:{description.get('model_type')}")
        return description

    async def post_json(self, path: str, body: Mapping[str, Any], action: str) -> Any:
        response = await _plain_request("POST", f"{self.base_url}{path}", headers=self.headers, json=body)
        if response.status_code != 200:
            raise RuntimeError(f"Failed to {_failed_action(action)}, detail: {_detail(response)}")
        return response.json()

    async def post_multipart(
        self, path: str, data: Mapping[str, str], files: Mapping[str, tuple[str, bytes]], action: str
    ) -> Any:
        response = await _plain_request(
            "POST", f"{self.base_url}{path}", headers=self.headers, data=data, files=files
        )
        if response.status_code != 200:
            raise RuntimeError(f"Failed to {action}, detail: {_detail(response)}")
        return response.json()


def _failed_action(action: str) -> str:
    return {"embeddings": "create the embeddings", "rerank": "rerank documents"}.get(action, action)


async def _plain_request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """A ``requests`` call without timeout or retries; failures raise like requests does."""
    try:
        check_scheme(url)
        async with http_client() as client:
            return await client.request(method, url, timeout=None, **kwargs)
    except httpx.HTTPError as exc:
        raise ConnectionError_(requests_error_text(url, exc, None)) from exc


def _detail(response: httpx.Response) -> str:
    body = json_or_none(response)
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    if response.status_code >= 400:
        kind = "Client" if response.status_code < 500 else "Server"
        return f"{response.status_code} {kind} Error: {response.reason_phrase} for url: {response.url}"
    return "Unknown error"


def _require_valid_uid(credentials: Mapping[str, Any]) -> None:
    if not _valid_model_uid(credentials):
        raise CredentialsValidateFailedError("model_uid should not contain /, ?, or #")


async def _connect_checking_type(
    credentials: Mapping[str, Any], expected_type: str, label: str
) -> tuple[XinferenceClient, str]:
    """Connect and describe the uid; refuse a model of another type, as the plugin does."""
    model_uid = credentials["model_uid"]
    client = await XinferenceClient.connect(
        credentials["server_url"].removesuffix("/"), credentials.get("api_key")
    )
    description = await client.describe(model_uid)
    if description.get("model_type") != expected_type:
        raise InvokeBadRequestError(
            f"please check model type, the model you want to invoke is not a {label} model"
        )
    return client, model_uid
