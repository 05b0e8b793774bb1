"""Fake LocalAI server mimicking LocalAI v4.9.0 (the version difystack pins).

It serves the HTTP contract a controller and Dify's LocalAI plugin rely on:

- health: ``GET /healthz`` (always 200), ``GET /readyz`` (503 ``starting`` until startup
  preload is done and ``DIFYSTACK_FAKE_READY_DELAY`` has passed), ``GET /version``;
- models: ``GET /v1/models`` and ``GET /models`` list the configured model names;
- gallery: ``GET /models/available``, ``GET /models/galleries``, ``POST /models/apply``,
  ``POST /models/delete/{name}``, ``GET /models/jobs[/{uuid}]``, ``POST /models/reload``.
  Installs and deletions are jobs run one at a time, each taking
  ``DIFYSTACK_FAKE_LAUNCH_LATENCY`` seconds;
- inference (OpenAI shapes): chat completions (plain and SSE streaming), completions,
  embeddings (with and without the ``/v1`` prefix) and Jina-style ``POST /v1/rerank``.

The gallery is a small built-in index (no network). Weight downloads are simulated by writing
small placeholder files into the models directory, so a model "installed" by the fake looks
on disk like one installed by the real server. Embeddings are deterministic unit vectors whose
dimension follows the model weights, including the gallery's ``bert-embeddings`` trap (a
Llama-3.2-1B used as embedder, 2048 dimensions).

Environment variables (same names as the real server):
``LOCALAI_MODELS_PATH``/``MODELS_PATH`` (default ``<cwd>/models``; the real container image
sets ``/models``), ``LOCALAI_CONFIG_FILE``/``CONFIG_FILE`` (YAML list of model configs),
``LOCALAI_PRELOAD_MODELS``/``PRELOAD_MODELS`` (JSON list of ``/models/apply`` bodies),
``LOCALAI_PRELOAD_MODELS_CONFIG``/``PRELOAD_MODELS_CONFIG`` (YAML file with the same list),
``LOCALAI_GALLERIES``/``GALLERIES`` (JSON list of galleries), ``LOCALAI_API_KEY``/``API_KEY``
(comma-separated keys), ``LOCALAI_DISABLE_GALLERY_ENDPOINT``/``DISABLE_GALLERY_ENDPOINT``.

Every route is in :func:`.app.route_table`; its modules: :mod:`.catalogue` (the gallery, data),
:mod:`.config`, :mod:`.model_configs`, :mod:`.installer` (gallery jobs), :mod:`.state`, :mod:`.auth`
(API keys) and the handlers :mod:`.health`, :mod:`.gallery`, :mod:`.inference`.

Failure kinds understood in ``DIFYSTACK_FAKE_FAIL``: ``never-ready``,
``apply[:<gallery id|install name>]``, ``download[:<file name>]``, ``delete[:<model name>]``,
``infer[:<model name>]``.
"""

from difystack.fakes.localai.app import create_app

__all__ = ["create_app"]
