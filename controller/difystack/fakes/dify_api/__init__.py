"""Fake Dify 1.x api container (role ``dify-api``, port 5001).

Implements the console API a bootstrap script drives (reference notes
/work/shared/reference/dify-console-api.md): ``/health``, ping, setup/init, system
features, login/logout/refresh with the version's session scheme, the plugin endpoints (which
forward to the plugin daemon over HTTP, like the real api) and the model-provider endpoints
(:mod:`.models`), and the apps and knowledge bases ``difystack verify``
drives, console and service API (:mod:`.apps`, :mod:`.chat`,
:mod:`.datasets`). Errors use Dify's
``{"code", "message", "status"}`` shape and every response carries ``X-Version``.

Environment (names of the real api container): ``SECRET_KEY``, ``INIT_PASSWORD``,
``ACCESS_TOKEN_EXPIRE_MINUTES``, ``REFRESH_TOKEN_EXPIRE_DAYS``, ``CONSOLE_API_URL`` /
``CONSOLE_WEB_URL`` (both https: ``__Host-`` cookies with ``Secure``), ``PLUGIN_DAEMON_URL``,
``PLUGIN_DAEMON_KEY``, ``MARKETPLACE_ENABLED``, ``MARKETPLACE_API_URL``,
``PLUGIN_MAX_PACKAGE_SIZE``; fake-only: ``DIFYSTACK_FAKE_DIFY_VERSION`` (default 1.13.3),
``DIFYSTACK_FAKE_STATE_DIR`` (JSON state, default /app/api/storage/difystack-fake),
``DIFYSTACK_FAKE_MARKETPLACE_PACKAGES`` (the real .difypkg files the simulated marketplace
serves, signed: :mod:`.marketplace`) and ``DIFYSTACK_FAKE_MARKETPLACE``
(``reachable``, or ``unreachable``: downloads fail as offline).

Every route is in :meth:`.app.DifyApi.route_table`; its modules: :mod:`.config`, :mod:`.errors`,
:mod:`.state`, :mod:`.auth` (sessions, keys, the route guard), :mod:`.daemon_client`,
:mod:`.schemas` (request parsing, credential rules), :mod:`.providers`, :mod:`.marketplace` and
the handlers :mod:`.console`, :mod:`.plugins`, :mod:`.models`, :mod:`.apps`, :mod:`.chat`,
:mod:`.datasets`.

Behaviour: ``ready_delay`` / ``never-ready`` (503 until ready).
"""

from difystack.fakes.dify_api.app import create_app

__all__ = ["create_app"]
