"""The plugins the daemon runs: Dify's REAL official plugins, unmodified.

An installed plugin is unpacked and started (:mod:`difystack.fakes.plugin_process`) with the
environment built from the package's own uv.lock under ``DIFYSTACK_FAKE_PLUGIN_ENVS`` (the
plugin-daemon stand-in image bakes them); one process per plugin id. Without an environment for
a package the start fails as the real daemon's dependency install does.
"""

from __future__ import annotations

from difystack import settings
from difystack.fakes.dify_plugin_daemon.config import DaemonConfig
from difystack.fakes.dify_plugin_daemon.state import DaemonStore
from difystack.fakes.plugin_process import PluginProcess, PluginStartError, env_python, unpack


class PluginRuntime:
    def __init__(self, config: DaemonConfig, store: DaemonStore) -> None:
        self.config = config
        self.store = store
        self.processes: dict[str, PluginProcess] = {}

    async def start(self, identifier: str) -> PluginProcess:
        """Unpack the package and start the plugin with the environment built for its lock."""
        plugin_id = identifier.split(":", 1)[0]
        checksum = identifier.rsplit("@", 1)[1]
        package = self.store.package_dir / f"{checksum}.difypkg"
        if not package.exists():
            raise PluginStartError(f"failed to install dependencies: package {identifier} is not stored")
        if self.config.plugin_envs is None:
            raise PluginStartError(
                "failed to install dependencies: this plugin daemon stand-in has no plugin environments"
                f" ({settings.FAKE_PLUGIN_ENVS.name} is unset)"
            )
        cwd = self.config.storage_root / "cwd" / plugin_id.replace("/", "-") / checksum
        plugin_dir = unpack(package, cwd)
        python = env_python(self.config.plugin_envs, plugin_dir)
        if python is None:
            raise PluginStartError(
                f"failed to install dependencies: no environment was built for {identifier}'s"
                f" uv.lock under {self.config.plugin_envs}"
            )
        await self.stop(plugin_id)
        plugin_env = {"TIKTOKEN_CACHE_DIR": self.config.tiktoken_cache} if self.config.tiktoken_cache else {}
        process = PluginProcess(plugin_dir, str(python), plugin_env)
        await process.ensure_started()
        self.processes[plugin_id] = process
        return process

    async def running(self, identifier: str) -> PluginProcess:
        """The plugin's process, started again when it is not running (e.g. after a restart)."""
        process = self.processes.get(identifier.split(":", 1)[0])
        if process is None or not process.running:
            process = await self.start(identifier)
        return process

    async def stop(self, plugin_id: str) -> None:
        process = self.processes.pop(plugin_id, None)
        if process is not None:
            await process.stop()

    async def stop_all(self) -> None:
        for plugin_id in list(self.processes):
            await self.stop(plugin_id)
