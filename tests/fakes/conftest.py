"""Fixtures of the fakes' contract tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import serve_app
from tests.fakes.dify_support import BGE_DESCRIBE, QWEN_DESCRIBE, ModelServer


@pytest.fixture(scope="module")
def shared_server() -> Iterator[ModelServer]:
    server = ModelServer()
    with serve_app(server.app()) as url:
        server.url = url
        yield server


@pytest.fixture
def server(shared_server: ModelServer) -> ModelServer:
    """The module's model server, reset: Xinference uids qwen (chat) and bge (embedding),
    LocalAI models llama and text-embedding-ada-002, no calls recorded."""
    shared_server.xinference = {"qwen": QWEN_DESCRIBE, "bge": BGE_DESCRIBE}
    shared_server.localai = {"llama", "text-embedding-ada-002"}
    shared_server.calls.clear()
    return shared_server


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "models" / "minilm"
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    return directory
