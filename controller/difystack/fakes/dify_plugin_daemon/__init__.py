"""Fake Dify plugin daemon (role ``dify-plugin-daemon``, port 5002).

Only the Dify api container talks to the daemon, so this fake reproduces the daemon routes
the api uses, with the daemon's own naming and envelope:

- success: HTTP 200 ``{"code": 0, "message": "success", "data": ...}``;
- error: ``{"code": -400|-401|-404|-500, "message": "<json {message, error_type, args}>",
  "data": null}``, mostly with HTTP 200 like the real daemon (401 for a bad ``X-Api-Key``,
  400/404 for the dispatch pre-checks);
- dispatch routes (``/plugin/{tenant}/dispatch/model/...``, ``dispatch/llm/invoke``,
  ``dispatch/text_embedding/invoke``) answer as a server-sent-event
  stream of such envelopes (``data: {...}``), as the real daemon does.

Environment (same names as the real daemon): ``SERVER_KEY`` (the api must send it as
``X-Api-Key``), ``FORCE_VERIFYING_SIGNATURE`` (default true), ``PLUGIN_STORAGE_LOCAL_ROOT``
(default ``/app/storage``; packages, installations and tasks are persisted there),
and ``MAX_PLUGIN_PACKAGE_SIZE`` (default 52428800).

The plugins themselves are Dify's REAL official plugins, unmodified: an install task unpacks
the package and starts it (:mod:`~difystack.fakes.plugin_process`) with the environment built
from the package's own uv.lock under ``DIFYSTACK_FAKE_PLUGIN_ENVS`` (the plugin-daemon stand-in
image bakes them); the dispatch routes forward to it over stdio: its ``stream`` chunks become
the SSE events, its ``error`` becomes the ``PluginInvokeError`` envelope around the plugin's own
error type and message. A plugin installed before a restart is started again on its first
dispatch. Without an environment for a package the install task fails as a dependency install
does. The LocalAI plugin's token counting needs tiktoken's gpt2 files in ``TIKTOKEN_CACHE_DIR``
(see :mod:`~difystack.fakes.tiktoken_cache`). Packages are read with
:mod:`~difystack.fakes.difypkg` (see there for the fake signature scheme).

Every route is in :meth:`.app.PluginDaemon.route_table`; its modules: :mod:`.config`,
:mod:`.envelope`, :mod:`.state` (packages, installations, tasks), :mod:`.runtime` (the running
plugins) and the handlers :mod:`.packages`, :mod:`.installs`, :mod:`.dispatch`.

Behaviour knobs: ``ready_delay`` (503 until then), ``launch_latency`` (duration of a plugin
install task: a quarter ``pending``, the rest ``running``). Failure kinds: ``install`` /
``install:<plugin_id>`` (the install task fails with ``failed to install dependencies: ...``)
and ``never-ready``.
"""

from difystack.fakes.dify_plugin_daemon.app import create_app

__all__ = ["create_app"]
