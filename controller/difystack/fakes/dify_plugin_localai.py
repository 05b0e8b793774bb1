"""``langgenius/localai`` 0.0.8 as the fake plugin daemon runs it (reference notes §6.2).

The LLM goes through the OpenAI SDK (``{server_url}/v1/chat/completions`` or
``/v1/completions``, api key "1", two retries with back-off); text embeddings are a plain
``POST {server_url}/embeddings`` (no ``/v1``) with ``Bearer 123``.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping
from typing import Any

import httpx

from difystack.fakes.dify_plugin_runtime import (
    DEMO_AUDIO,
    LLM_PARAMETER_RULES,
    ConnectionError_,
    CredentialsValidateFailedError,
    InvokeBadRequestError,
    InvokeConnectionError,
    InvokeError,
    InvokeServerUnavailableError,
    ai_model_entity,
    http_client,
    join_url,
    json_or_none,
    requests_error_text,
)

OPENAI_USER_AGENT = "OpenAI/Python 1.99.9"
LOCALAI_RERANK_PROBE_QUERY = "What is the capital of the United States?"
LOCALAI_RERANK_PROBE_DOCS = [
    "Carson City is the capital city of the American state of Nevada. At the 2010 United States "
    "Census, Carson City had a population of 55,274.",
    "The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific Ocean "
    "that are a political division controlled by the United States. Its capital is Saipan.",
]


class LocalAIRuntime:
    async def validate_credentials(self, model_type: str, model: str, credentials: dict[str, Any]) -> None:
        if model_type == "llm":
            await self._validate_llm(model, credentials)
        elif model_type == "text-embedding":
            await self._validate_text_embedding(model, credentials)
        elif model_type == "rerank":
            await self._validate_rerank(model, credentials)
        elif model_type == "speech2text":
            await self._validate_speech2text(model, credentials)
        else:
            raise ValueError(f"model type {model_type} is not supported by provider localai")

    async def _validate_llm(self, model: str, credentials: dict[str, Any]) -> None:
        try:
            # Like the plugin's _to_client_kwargs, this mutates the credentials it returns.
            if not credentials["server_url"].endswith("/"):
                credentials["server_url"] += "/"
            base_url = join_url(credentials["server_url"], "v1")
            completion_type = credentials["completion_type"]
            if completion_type == "chat_completion":
                body: dict[str, Any] = {
                    "messages": [{"role": "user", "content": "ping"}],
                    "model": model,
                    "stream": False,
                    "max_tokens": 10,
                }
                result = await openai_post(f"{base_url}/chat/completions", body)
                _check_openai_result(result, "ChatCompletion", "message")
            elif completion_type == "completion":
                body = {"prompt": "ping\n", "model": model, "stream": False, "max_tokens": 10}
                result = await openai_post(f"{base_url}/completions", body)
                _check_openai_result(result, "Completion", "text")
            else:
                raise ValueError(f"Unknown completion type {completion_type}")
        except Exception as exc:
            raise CredentialsValidateFailedError(f"Invalid credentials {exc}") from exc

    async def _validate_text_embedding(self, model: str, credentials: dict[str, Any]) -> None:
        server_url = credentials.get("server_url")
        if not server_url:
            raise CredentialsValidateFailedError("server_url is required")
        url = join_url(server_url, "embeddings")
        headers = {"Authorization": "Bearer 123", "Content-Type": "application/json"}
        try:
            async with http_client() as client:
                response = await client.post(
                    url, headers=headers, content=json.dumps({"model": model, "input": "ping"}), timeout=10
                )
        except httpx.HTTPError as exc:
            raise CredentialsValidateFailedError(
                f"Invalid credentials: {requests_error_text(url, exc, 10)}"
            ) from exc
        if response.status_code != 200:
            body = json_or_none(response)
            if body is None:
                raise InvokeServerUnavailableError(
                    f"Failed to convert response to json: Expecting value: line 1 column 1 (char 0)"
                    f" with text: {response.text}"
                )
            message = str(((body.get("error") or {}) if isinstance(body, dict) else {}).get("message", body))
            if response.status_code == 401:
                raise CredentialsValidateFailedError("Invalid credentials")
            error_class = {429: InvokeError, 500: InvokeServerUnavailableError, 400: InvokeBadRequestError}
            raise error_class.get(response.status_code, InvokeError)(message)
        body = json_or_none(response)
        try:
            _ = [item["embedding"] for item in body["data"]]
            _ = body["usage"]["total_tokens"]
        except (KeyError, TypeError) as exc:
            raise InvokeServerUnavailableError(
                f"Failed to convert response to json: {exc!r} with text: {response.text}"
            ) from exc

    async def _validate_rerank(self, model: str, credentials: dict[str, Any]) -> None:
        url = join_url(credentials["server_url"], "rerank")
        body = {
            "model": model,
            "query": LOCALAI_RERANK_PROBE_QUERY,
            "documents": LOCALAI_RERANK_PROBE_DOCS,
            "top_n": None,
        }
        headers = {
            "Authorization": f"Bearer {credentials.get('api_key')}",
            "Content-Type": "application/json",
        }
        try:
            try:
                async with http_client() as client:
                    response = await client.post(url, headers=headers, content=json.dumps(body), timeout=10)
            except httpx.HTTPError as exc:
                raise ConnectionError_(requests_error_text(url, exc, 10)) from exc
            if response.status_code >= 400:
                kind = "Client" if response.status_code < 500 else "Server"
                raise RuntimeError(
                    f"{response.status_code} {kind} Error: {response.reason_phrase} for url: {url}"
                )
            for item in response.json()["results"]:
                _ = (item["index"], item["document"]["text"], item["relevance_score"])
        except Exception as exc:
            raise CredentialsValidateFailedError(str(exc)) from exc

    async def _validate_speech2text(self, model: str, credentials: dict[str, Any]) -> None:
        url = join_url(credentials["server_url"], "v1", "audio", "transcriptions")
        try:
            try:
                async with http_client() as client:
                    response = await client.post(
                        url, data={"model": model}, files={"file": ("audio.wav", DEMO_AUDIO)}, timeout=None
                    )
            except httpx.HTTPError as exc:
                raise ConnectionError_(requests_error_text(url, exc, None)) from exc
            _ = response.json()["text"]
        except Exception as exc:
            raise CredentialsValidateFailedError(str(exc)) from exc

    async def model_schema(
        self, model_type: str, model: str, credentials: Mapping[str, Any]
    ) -> dict[str, Any]:
        if model_type == "llm":
            modes = {"chat_completion": "chat", "completion": "completion"}
            completion_type = credentials["completion_type"]
            if completion_type not in modes:
                raise ValueError(f"Unknown completion type {completion_type}")
            properties = {
                "mode": modes[completion_type],
                "context_size": int(credentials.get("context_size", "2048")),
            }
            return ai_model_entity(model, "llm", properties, [], LLM_PARAMETER_RULES)
        if model_type == "text-embedding":
            properties = {"context_size": int(credentials.get("context_size", "512")), "max_chunks": 1}
            return ai_model_entity(model, model_type, properties)
        return ai_model_entity(model, model_type, {})


async def openai_post(url: str, body: Mapping[str, Any], max_retries: int = 2) -> Any:
    """A non-streaming OpenAI SDK call: api_key "1", retries with back-off, SDK error texts."""
    headers = {
        "Authorization": "Bearer 1",
        "User-Agent": OPENAI_USER_AGENT,
        "Content-Type": "application/json",
    }
    timeout = httpx.Timeout(60.0, connect=5.0)
    async with http_client() as client:
        for attempt in range(max_retries + 1):
            last_attempt = attempt == max_retries
            try:
                response = await client.post(url, headers=headers, content=json.dumps(body), timeout=timeout)
            except httpx.TimeoutException as exc:
                if last_attempt:
                    raise InvokeConnectionError("Request timed out.") from exc
            except httpx.HTTPError as exc:
                if last_attempt:
                    raise InvokeConnectionError("Connection error.") from exc
            else:
                retryable = response.status_code in (408, 409, 429) or response.status_code >= 500
                if response.status_code < 400:
                    return json.loads(response.text)
                if not retryable or last_attempt:
                    body_text = response.text.strip()
                    parsed = json_or_none(response)
                    shown = parsed if parsed is not None else body_text
                    raise RuntimeError(
                        f"Error code: {response.status_code}" + (f" - {shown}" if shown else "")
                    )
            await asyncio.sleep(min(0.5 * 2**attempt, 8.0) * (1 - 0.25 * random.random()))
    raise AssertionError("unreachable")


def _check_openai_result(result: Any, kind: str, content_field: str) -> None:
    if not isinstance(result, dict) or not isinstance(result.get("choices"), list):
        raise AttributeError(f"'{kind}' object has no attribute 'choices'")
    if not result["choices"]:
        raise InvokeServerUnavailableError("Empty response")
    choice = result["choices"][0]
    if not isinstance(choice, dict) or content_field not in choice:
        choice_kind = "Choice" if kind == "ChatCompletion" else "CompletionChoice"
        raise AttributeError(f"'{choice_kind}' object has no attribute '{content_field}'")
