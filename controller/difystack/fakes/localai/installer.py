"""Gallery operations: installing and deleting models in the models directory as LocalAI's
gallery service does. Weight downloads are simulated (placeholder files, or a copy of a
``file://`` source under the models path), each taking a share of ``launch_latency``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from difystack.fakes.behaviour import Behaviour
from difystack.fakes.localai.catalogue import find_gallery_entry, gallery_base_file
from difystack.fakes.localai.config import Settings
from difystack.fakes.localai.model_configs import ModelConfig, config_paths_problem, merge_overrides


def _go_number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _human_size(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


class InstallError(Exception):
    """A gallery operation failed; the message becomes the job's ``error``."""


@dataclass
class OpStatus:
    """``galleryop.OpStatus`` as LocalAI serialises it."""

    deletion: bool = False
    file_name: str = ""
    error: str | None = None
    processed: bool = False
    message: str = ""
    progress: float = 0.0
    phase: str = ""
    file_size: str = ""
    downloaded_size: str = ""
    gallery_element_name: str = ""
    cancelled: bool = False
    cancellable: bool = False

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"deletion": self.deletion, "file_name": self.file_name}
        if self.error:
            body["error"] = self.error
        body.update(processed=self.processed, message=self.message, progress=_go_number(self.progress))
        if self.phase:
            body["phase"] = self.phase
        body.update(
            file_size=self.file_size,
            downloaded_size=self.downloaded_size,
            gallery_element_name=self.gallery_element_name,
            cancelled=self.cancelled,
            cancellable=self.cancellable,
        )
        return body


@dataclass
class GalleryOp:
    id: str
    request: dict[str, Any]
    element_name: str
    deletion: bool = False


@dataclass
class InstallPlan:
    """What an install resolves to before anything is written."""

    name: str
    config_text: str
    overrides: dict[str, Any]
    files: list[dict[str, Any]]
    metadata: dict[str, Any] = field(default_factory=dict)


StatusSink = Callable[[OpStatus], None]
NOMINAL_FILE_BYTES = 64 * 1024 * 1024
DOWNLOAD_TICKS = 4


class ModelInstaller:
    """Installs and deletes models in the models directory, as LocalAI's gallery service does."""

    def __init__(self, settings: Settings, behaviour: Behaviour) -> None:
        self.settings = settings
        self.behaviour = behaviour

    @property
    def models_path(self) -> Path:
        return self.settings.models_path

    # -- install ------------------------------------------------------------------------

    async def install(self, op: GalleryOp, report: StatusSink) -> None:
        started = OpStatus(message=f"processing model: {op.element_name}", cancellable=True)
        report(started)
        plan = self.plan(op.request)
        tick = self._tick_seconds(len(plan.files))
        await asyncio.sleep(tick)
        self._check_injected_failure(op, plan)
        await self._download_files(plan.files, op.element_name, tick, report)
        self._write_config(plan)

    def plan(self, request: Mapping[str, Any]) -> InstallPlan:
        requested_name = str(request.get("name") or "")
        request_files = [dict(item) for item in request.get("files") or [] if isinstance(item, dict)]
        request_overrides = dict(request.get("overrides") or {})
        gallery_id = str(request.get("id") or "")
        if gallery_id:
            return self._plan_from_gallery(gallery_id, requested_name, request_files, request_overrides)
        url = str(request.get("url") or "")
        if url:
            base = self.fetch_gallery_file(url)
            return InstallPlan(
                name=requested_name or str(base.get("name") or ""),
                config_text=str(base.get("config_file") or ""),
                overrides=request_overrides,
                files=list(base.get("files") or []) + request_files,
                metadata=base,
            )
        inline = request.get("config_file")
        if isinstance(inline, dict) and inline:
            return InstallPlan(
                name=requested_name,
                config_text=yaml.safe_dump(inline, sort_keys=False),
                overrides=request_overrides,
                files=request_files,
                metadata={"name": requested_name},
            )
        raise InstallError("invalid gallery model: one of id, url or config_file must be specified")

    def _plan_from_gallery(
        self, gallery_id: str, requested_name: str, files: list[dict[str, Any]], overrides: dict[str, Any]
    ) -> InstallPlan:
        entry = find_gallery_entry(self.settings.galleries, gallery_id)
        if entry is None:
            raise InstallError(f"no model found with name {json.dumps(gallery_id)}")
        base = self.fetch_gallery_file(entry["url"])
        return InstallPlan(
            name=requested_name or entry["name"],
            config_text=str(base.get("config_file") or ""),
            overrides=merge_overrides(entry.get("overrides") or {}, overrides),
            files=list(base.get("files") or []) + files + list(entry.get("files") or []),
            metadata={key: entry.get(key) for key in ("name", "description", "license", "urls", "icon")},
        )

    def fetch_gallery_file(self, url: str) -> dict[str, Any]:
        """A gallery-format file (name, config_file, files...) from a built-in or file:// URL."""
        known = gallery_base_file(url)
        if known is not None:
            return known
        if url.startswith("file://"):
            return self._read_local_gallery_file(url.removeprefix("file://"))
        raise InstallError(
            f"failed to download {json.dumps(url)}: this fake LocalAI server is offline and only "
            "serves its built-in gallery files and file:// URLs under the models path"
        )

    def _read_local_gallery_file(self, raw_path: str) -> dict[str, Any]:
        path = Path(raw_path).absolute()
        if not self._inside_models_path(path):
            raise InstallError("path is outside of trusted root")
        try:
            content = yaml.safe_load(path.read_text())
        except FileNotFoundError as exc:
            raise InstallError(f"open {path}: no such file or directory") from exc
        except (OSError, yaml.YAMLError) as exc:
            raise InstallError(f"failed to read {path}: {exc}") from exc
        if not isinstance(content, dict):
            raise InstallError(f"failed to read {path}: not a YAML mapping")
        # A gallery file's config_file is YAML text; accept a mapping too.
        if isinstance(content.get("config_file"), dict):
            content["config_file"] = yaml.safe_dump(content["config_file"], sort_keys=False)
        return content

    def _check_injected_failure(self, op: GalleryOp, plan: InstallPlan) -> None:
        targets = {op.element_name, op.element_name.rpartition("@")[2], plan.name} - {""}
        failing = next((target for target in sorted(targets) if self.behaviour.fails("apply", target)), None)
        if failing is None and not self.behaviour.fails("apply"):
            return
        raise InstallError(f"failed to install {json.dumps(failing or plan.name)}: injected failure (apply)")

    def _tick_seconds(self, file_count: int) -> float:
        return self.behaviour.launch_latency / (1 + DOWNLOAD_TICKS * file_count)

    async def _download_files(
        self, files: list[dict[str, Any]], element_name: str, tick: float, report: StatusSink
    ) -> None:
        for item in files:
            filename = str(item.get("filename") or "")
            uri = str(item.get("uri") or "")
            target = self.verified_path(filename)
            if self.behaviour.fails("download", filename):
                raise InstallError(
                    f"failed to download file {json.dumps(filename)} from {uri}: injected failure"
                )
            for step in range(1, DOWNLOAD_TICKS + 1):
                done = NOMINAL_FILE_BYTES * step // DOWNLOAD_TICKS
                report(
                    OpStatus(
                        message=f"processing file: {filename}. Total: {_human_size(NOMINAL_FILE_BYTES)}. "
                        f"Current: {_human_size(done)}",
                        file_name=filename,
                        progress=100.0 * step / DOWNLOAD_TICKS,
                        phase="downloading",
                        file_size=_human_size(NOMINAL_FILE_BYTES),
                        downloaded_size=_human_size(done),
                        gallery_element_name=element_name,
                        cancellable=True,
                    )
                )
                await asyncio.sleep(tick)
            self.materialise(target, uri)

    def materialise(self, target: Path, uri: str) -> None:
        """Put the file in place: copy a file:// source, otherwise write a placeholder."""
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        if uri.startswith("file://"):
            source = Path(uri.removeprefix("file://")).absolute()
            if not self._inside_models_path(source):
                raise InstallError("path is outside of trusted root")
            try:
                shutil.copyfile(source, target)
            except OSError as exc:
                raise InstallError(f"failed to copy {source}: {exc}") from exc
            return
        target.write_bytes(f"difystack fake LocalAI placeholder weights\nsource: {uri}\n".encode())

    def _write_config(self, plan: InstallPlan) -> None:
        config_path = self.verified_path(f"{plan.name}.yaml")
        if plan.overrides or plan.config_text.strip():
            try:
                base = yaml.safe_load(plan.config_text) or {}
            except yaml.YAMLError as exc:
                raise InstallError(f"failed to unmarshal config YAML: {exc}") from exc
            if not isinstance(base, dict):
                raise InstallError("failed to unmarshal config YAML: not a mapping")
            base["name"] = plan.name
            config = merge_overrides(base, plan.overrides)
            problem = config_paths_problem(config)
            if problem is not None:
                raise InstallError(f"failed to validate updated config YAML: {problem}")
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        gallery_record = dict(plan.metadata, name=plan.name, config_file=plan.config_text, files=plan.files)
        self.verified_path(f"._gallery_{plan.name}.yaml").write_text(yaml.safe_dump(gallery_record))

    # -- delete -------------------------------------------------------------------------

    async def delete(self, op: GalleryOp, report: StatusSink) -> None:
        report(OpStatus(message=f"processing model: {op.element_name}", deletion=True))
        await asyncio.sleep(self.behaviour.launch_latency)
        name = op.element_name
        if self.behaviour.fails("delete", name):
            raise InstallError(f"failed to delete {json.dumps(name)}: injected failure (delete)")
        config_path = self.verified_path(f"{name}.yaml")
        shared = self._files_of_other_models(name)
        for path in self._files_of_model(name):
            if path not in shared:
                with contextlib.suppress(OSError):
                    path.unlink()
        try:
            config_path.unlink()
        except FileNotFoundError as exc:
            raise InstallError(f"remove {config_path}: no such file or directory") from exc

    def _files_of_model(self, name: str) -> set[Path]:
        files: set[Path] = set()
        gallery_file = self.models_path / f"._gallery_{name}.yaml"
        with contextlib.suppress(OSError, yaml.YAMLError, AttributeError, TypeError):
            record = yaml.safe_load(gallery_file.read_text()) or {}
            files |= {self.models_path / str(item["filename"]) for item in record.get("files") or []}
        with contextlib.suppress(OSError, yaml.YAMLError, AttributeError, TypeError):
            data = yaml.safe_load((self.models_path / f"{name}.yaml").read_text()) or {}
            reference = ModelConfig(name=name, data=data).model_reference
            if reference and "://" not in reference:
                files.add(self.models_path / reference)
        files.add(gallery_file)
        return {path for path in files if self._inside_models_path(path)}

    def _files_of_other_models(self, name: str) -> set[Path]:
        others: set[Path] = set()
        for path in self.models_path.glob("*.y*ml"):
            other = path.stem
            if path.name.startswith(".") or other == name:
                continue
            others |= self._files_of_model(other)
        return others

    # -- paths --------------------------------------------------------------------------

    def _inside_models_path(self, path: Path) -> bool:
        root = self.models_path.resolve()
        return path.resolve().is_relative_to(root) and path.resolve() != root

    def verified_path(self, relative: str) -> Path:
        path = self.models_path / relative
        if relative.startswith("/") or not self._inside_models_path(path):
            raise InstallError("path is outside of trusted root")
        return path
