"""Run one fake server: ``python -m difystack.fakes <role> [--host H] [--port P]``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from difystack import settings
from difystack.fakes.behaviour import Behaviour

# role -> (module, default port); each module exposes ``create_app(behaviour, env)``.
ROLES: dict[str, tuple[str, int]] = {
    "xinference": ("difystack.fakes.xinference", 9997),
    "localai": ("difystack.fakes.localai", 8080),
    "dify-api": ("difystack.fakes.dify_api", 5001),
    "dify-plugin-daemon": ("difystack.fakes.dify_plugin_daemon", 5002),
    "stub": ("difystack.fakes.stub", 8080),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m difystack.fakes", description=__doc__)
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("--host", default=settings.FAKE_HOST.read() or "0.0.0.0")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)

    module_name, default_port = ROLES[args.role]
    port = args.port or int(settings.FAKE_PORT.read() or default_port)
    behaviour = Behaviour.from_env()
    app = importlib.import_module(module_name).create_app(behaviour, dict(os.environ))

    if behaviour.startup_delay:
        # Real servers keep their port closed while they boot.
        print(f"fake {args.role}: starting, port opens in {behaviour.startup_delay:g}s", flush=True)
        time.sleep(behaviour.startup_delay)

    import uvicorn

    print(f"fake {args.role}: listening on {args.host}:{port}", flush=True)
    uvicorn.run(app, host=args.host, port=port, log_level="info", access_log=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
