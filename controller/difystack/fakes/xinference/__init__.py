"""A faithful fake of the Xinference 4.1.0 REST API (``xinference-local``).

Every route is in :func:`.app.route_table`; its modules: :mod:`.catalogue` (built-in families and
engines, data), :mod:`.registry` and :mod:`.engines` (registrations, launch matching),
:mod:`.state` (settings, running instances), :mod:`.auth` (accounts, access), and the handlers
:mod:`.cluster`, :mod:`.registrations`, :mod:`.models`, :mod:`.inference`, :mod:`.accounts`.

What it mimics, from the project's reference notes (``xinference-localai-api.md`` PART A and
the verbatim answers of a real 4.1.0 in ``xinference-real-offline-report.md``):

- readiness: ``GET /status`` lists no worker until the fake is "ready";
- a small built-in catalogue (LLM / embedding / rerank), ``/v1/engines`` and
  ``/v1/model_registrations`` including custom registrations persisted under
  ``$XINFERENCE_HOME/model/v2/<type>/<name>.json``;
- the model lifecycle (blocking and ``wait_ready=false`` launches, a per-worker limit of
  concurrent launches, LOADING/READY/ERROR instances, describe/list/terminate/cancel);
- OpenAI-shaped inference with deterministic output (embeddings, chat, completions, rerank);
- the v3+ auth system (on by default): setup token, admin account, JWT login, ``xf-`` API keys,
  all kept in ``$XINFERENCE_HOME/auth/auth.db`` so they survive a restart.

Errors raised by Xinference's actors carry the ``[address=..., pid=...]`` prefix the real
server adds; errors raised by the REST layer itself do not.

Environment (read from the ``env`` mapping given to :func:`create_app`):

- ``XINFERENCE_HOME`` (default ``~/.xinference``), ``XINFERENCE_AUTH_ADVANCED`` (auth is off
  only for ``0``/``false``/``no``), ``XINFERENCE_MAX_CONCURRENT_LAUNCHES`` (default 5),
  ``XINFERENCE_ACCESS_TOKEN_EXPIRE_MINUTES`` (default 30).

Failure kinds understood in ``DIFYSTACK_FAKE_FAIL``:

- ``never-ready``: ``/status`` never lists a worker (launches fail: no worker);
- ``launch`` / ``launch:<model_name>`` / ``launch:<model_uid>``: the launch crashes after
  loading (instance ``ERROR``, uid removed, a blocking launch answers 500);
- ``launch-once:<model_name or uid>``: only the first launch of that model crashes (a
  transient failure; the next attempt succeeds);
- ``infer`` / ``infer:<model_uid>``: inference on that model answers 500;
- ``worker-restart-once:<model_name or uid>``: right after the first launch of that model its
  worker restarts: ``/v1/models`` still lists it, ``/v1/workers`` shows the worker without it
  (the real supervisor's record until the worker registers again).
"""

from difystack.fakes.xinference.app import create_app

__all__ = ["create_app"]
