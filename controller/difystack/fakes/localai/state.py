"""The state of one fake LocalAI: the loaded model configs, startup preload and the gallery
worker that runs install and delete jobs one at a time, with each job's status."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable

from starlette.applications import Starlette

from difystack.fakes.behaviour import Behaviour
from difystack.fakes.common.readiness import Readiness
from difystack.fakes.localai.config import Settings
from difystack.fakes.localai.installer import GalleryOp, InstallError, ModelInstaller, OpStatus
from difystack.fakes.localai.model_configs import ModelConfig, read_config_list_file, read_models_directory

log = logging.getLogger(__name__)


class LocalAIState:
    """All state of one fake LocalAI: its model configs, the gallery job queue and the jobs' status."""

    def __init__(self, behaviour: Behaviour, settings: Settings) -> None:
        self.behaviour = behaviour
        self.settings = settings
        self.installer = ModelInstaller(settings, behaviour)
        self.configs: dict[str, ModelConfig] = {}
        self.jobs: dict[str, OpStatus] = {}
        self.readiness = Readiness(behaviour)
        self.started = False
        self._queue: asyncio.Queue[GalleryOp] | None = None
        self._preload_done: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Load configs and start preload + the gallery worker (idempotent)."""
        if self.started:
            return
        self.started = True
        self.readiness.mark_started()
        self.settings.models_path.mkdir(parents=True, exist_ok=True)
        self.reload_configs()
        self._queue = asyncio.Queue()
        self._preload_done = asyncio.Event()
        self._tasks = [asyncio.create_task(self._preload()), asyncio.create_task(self._work())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    @contextlib.asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    def reload_configs(self) -> None:
        """CONFIG_FILE first, then the models directory (whose configs win on name clashes)."""
        configs: dict[str, ModelConfig] = {}
        if self.settings.config_file is not None:
            configs.update(
                (config.name, config) for config in read_config_list_file(self.settings.config_file)
            )
        configs.update((config.name, config) for config in read_models_directory(self.settings.models_path))
        self._materialise_download_files(configs.values())
        self.configs = dict(sorted(configs.items()))

    def _materialise_download_files(self, configs: Iterable[ModelConfig]) -> None:
        # The real server fetches a config's download_files when it loads the config.
        for config in configs:
            for item in config.data.get("download_files") or []:
                if not isinstance(item, dict) or not item.get("filename"):
                    continue
                with contextlib.suppress(InstallError, OSError):
                    self.installer.materialise(
                        self.installer.verified_path(str(item["filename"])), str(item.get("uri") or "")
                    )

    async def _preload(self) -> None:
        assert self._preload_done is not None
        try:
            for request in self.settings.preload_requests:
                op = GalleryOp(
                    id=str(uuid.uuid1()), request=request, element_name=str(request.get("id") or "")
                )
                try:
                    await self.installer.install(op, lambda _status: None)
                except Exception as exc:  # the real server logs preload failures and starts anyway
                    log.error("localai: error installing preloaded model %s: %s", request, exc)
            self.reload_configs()
        finally:
            self._preload_done.set()

    async def _work(self) -> None:
        assert self._queue is not None and self._preload_done is not None
        await self._preload_done.wait()
        while True:
            op = await self._queue.get()
            await self._execute(op)

    async def _execute(self, op: GalleryOp) -> None:
        def report(status: OpStatus) -> None:
            status.gallery_element_name = status.gallery_element_name or op.element_name
            self.jobs[op.id] = status

        try:
            if op.deletion:
                await self.installer.delete(op, report)
            else:
                await self.installer.install(op, report)
        except InstallError as exc:
            self._finish(op, error=str(exc))
            return
        except Exception as exc:  # a fake bug must not kill the worker
            log.exception("localai: gallery operation %s crashed", op.id)
            self._finish(op, error=f"{type(exc).__name__}: {exc}")
            return
        self.reload_configs()
        self._finish(op)

    def _finish(self, op: GalleryOp, *, error: str | None = None) -> None:
        self.jobs[op.id] = OpStatus(
            deletion=op.deletion,
            processed=True,
            error=error,
            message=f"error: {error}" if error else "completed",
            progress=0 if error else 100,
            gallery_element_name=op.element_name,
        )

    def is_ready(self) -> bool:
        preloaded = self._preload_done is not None and self._preload_done.is_set()
        return self.started and preloaded and self.readiness.ready()

    def enqueue(self, op: GalleryOp) -> None:
        assert self._queue is not None
        self.jobs[op.id] = OpStatus(
            message="queued",
            phase="queued",
            gallery_element_name=op.element_name,
            deletion=op.deletion,
            cancellable=not op.deletion,
        )
        self._queue.put_nowait(op)
