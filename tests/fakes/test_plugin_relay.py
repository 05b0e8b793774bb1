"""The relay that runs a real plugin ends it when the fake daemon that started it goes away.

A plugin whose daemon died without stopping it sees its stdin closed and spins; left running,
every in-process test run leaked such plugins and they ate the machine's CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from difystack.fakes.plugin_process import RELAY

# A daemon stand-in: starts the relay in its own session (as PluginProcess does), prints the
# relay's pid and exits at once, without stopping it.
SHORT_LIVED_DAEMON = """
import os, subprocess, sys
plugin = [sys.executable, "-c", "import time; time.sleep(120)"]
relay = subprocess.Popen(
    [sys.executable, "-c", sys.argv[1], str(os.getpid()), *plugin],
    start_new_session=True,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
print(relay.pid, flush=True)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().split()[2] != "Z"


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry))
    return members


def test_the_relay_ends_the_plugin_when_its_daemon_is_gone() -> None:
    daemon = subprocess.run(
        [sys.executable, "-c", SHORT_LIVED_DAEMON, RELAY], capture_output=True, text=True, check=True
    )
    relay_pid = int(daemon.stdout.strip())
    deadline = time.monotonic() + 10
    while _group_members(relay_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _group_members(relay_pid) == [], "the plugin outlived its daemon"
    assert not _alive(relay_pid)
