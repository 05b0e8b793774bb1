#!/usr/bin/env python3
"""Print how long each real plugin takes to start in the plugin-daemon stand-in (target < 2 s).

Runs inside the image built by ``difystack standins build --plugin-packages DIR``: for every
baked package, the time from spawning ``python -m main`` to its first heartbeat, first start
(cold .pyc) and a restart. It prints figures; it asserts nothing.
Usage: python bench/bench_plugin_start.py [--image IMAGE]
"""

from __future__ import annotations

import argparse
import json
import subprocess

from difystack.plugin_standin import ROLE
from difystack.standins import standin_image

TARGET_SECONDS = 2.0
PROBE = """
import asyncio, json, tempfile
from pathlib import Path
from difystack.fakes.plugin_process import PluginProcess, env_python, unpack

async def main():
    figures = {}
    for package in sorted(Path("/opt/plugin-packages").glob("*.difypkg")):
        plugin_dir = unpack(package, Path(tempfile.mkdtemp()) / package.stem)
        process = PluginProcess(plugin_dir, str(env_python(Path("/opt/plugin-envs"), plugin_dir)))
        runs = []
        for _ in range(2):
            await process.start()
            runs.append(process.start_seconds)
            await process.stop()
        figures[package.name] = runs
    print(json.dumps(figures))

asyncio.run(main())
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=standin_image(ROLE))
    image = parser.parse_args().image
    output = subprocess.run(
        ["docker", "run", "--rm", image, "python", "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout
    figures = json.loads(output.strip().splitlines()[-1])
    print(f"plugin start to first heartbeat in {image} (target < {TARGET_SECONDS:.0f} s):")
    for package, (first, again) in figures.items():
        print(f"  {package:<40} first {first:5.2f} s   restart {again:5.2f} s")


if __name__ == "__main__":
    main()
