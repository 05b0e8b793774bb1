"""Dify: the admin account, the model-provider plugins, the model registrations, the defaults.

Each registration is a credential named ``difystack`` on the model. An identical one is left
alone; a changed one is updated in place; a model registered by someone else gets ours added
and made current. Before anything is written, a real call proves the model answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from difystack.clients.dify import DifyConsole, PluginInstallFailed
from difystack.clients.http import HttpError
from difystack.config_model import AdminConfig, PluginConfig
from difystack.errors import DifystackError
from difystack.reconcile.desired import CREDENTIAL_NAME, DesiredState, Registration
from difystack.reconcile.report import Action, ActionLog, Reporter, StepFailed, silent
from difystack.secrets_store import write_private

ADMIN_STEP = "dify admin"
PLUGINS_STEP = "dify plugins"
DEFAULTS_STEP = "dify default models"


def registration_step(registration: Registration) -> str:
    return f"register {registration.key}"


@dataclass(frozen=True)
class AdminCredentials:
    admin: AdminConfig
    password: str
    init_password: str | None


class SessionStore:
    """The Dify console session, kept between runs (mode 0600) so a re-run need not log in."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self, base_url: str) -> dict[str, Any] | None:
        if self.path is None or not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("base_url") == base_url else None

    def save(self, base_url: str, session: Mapping[str, Any]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_private(self.path, json.dumps({"base_url": base_url, **session}))


def same_credentials(stored: Mapping[str, Any], desired: Mapping[str, str]) -> bool:
    """Stored values equal the desired public ones (plugins add fields and slashes; ignore those)."""
    for key, wanted in desired.items():
        have = stored.get(key)
        if have is None:
            return False
        if key == "server_url":
            if str(have).rstrip("/") != wanted.rstrip("/"):
                return False
        elif str(have) != wanted:
            return False
    return True


class DifyPart:
    def __init__(
        self,
        console: DifyConsole,
        desired: DesiredState,
        admin: AdminCredentials,
        plugins: PluginConfig,
        config_dir: Path,
        sessions: SessionStore | None = None,
        fingerprints: dict[str, str] | None = None,
        report: Reporter = silent,
        log: ActionLog | None = None,
        plugin_timeout: float = 1800.0,
    ) -> None:
        self.console = console
        self.desired = desired
        self.admin = admin
        self.plugin_config = plugins
        self.config_dir = config_dir
        self.sessions = sessions or SessionStore(None)
        self.fingerprints = fingerprints if fingerprints is not None else {}
        self.report = report
        self.log = log or ActionLog()
        self.plugin_timeout = plugin_timeout
        # Every login (the first, or a re-login after the session expired) is kept for next time.
        console.on_login = lambda session: self.sessions.save(console.base_url, session)

    # -- admin ----------------------------------------------------------------------------------

    def ensure_admin(self) -> None:
        email = self.admin.admin.email
        if self.console.setup_state() != "finished":
            self.report(ADMIN_STEP, "waiting", f"creating the admin account {email}")
            self.console.setup(
                email,
                self.admin.admin.name,
                self.admin.password,
                self.admin.admin.language,
                init_password=self.admin.init_password,
            )
            self.log.add(Action("dify", "create-admin", email))
        if not self._resume_session():
            self.report(ADMIN_STEP, "waiting", f"logging in as {email}")
            self.console.login(email, self.admin.password)
        self.report(ADMIN_STEP, "ready", f"logged in as {email}")

    def _resume_session(self) -> bool:
        saved = self.sessions.load(self.console.base_url)
        if not saved:
            return False
        self.console.import_session(saved, self.admin.admin.email, self.admin.password)
        try:
            self.console.installed_plugins() if self.console.has_plugins() else self.console.providers()
        except (HttpError, DifystackError):
            return False
        return True

    # -- plugins --------------------------------------------------------------------------------

    def missing_plugins(self) -> list[str]:
        if not self.console.has_plugins():
            return []  # Dify 0.x: Xinference and LocalAI are built in
        installed = self.console.installed_plugins()
        return [plugin for plugin in self.desired.plugins if plugin not in installed]

    def ensure_plugins(self) -> None:
        missing = self.missing_plugins()
        if not missing:
            self.report(PLUGINS_STEP, "ready", ", ".join(self.desired.plugins) or "none needed")
            return
        self.report(PLUGINS_STEP, "waiting", f"installing {', '.join(missing)}")
        if self.plugin_config.source == "marketplace":
            versions = self.console.latest_versions(missing)
            unknown = [plugin for plugin in missing if not versions.get(plugin)]
            if unknown:
                raise StepFailed(
                    PLUGINS_STEP,
                    f"the marketplace does not offer {', '.join(unknown)} (or Dify cannot reach it)",
                    hint="offline? set dify.plugins.source: packages and give .difypkg files",
                )
            task = self.console.install_from_marketplace([versions[p] for p in missing])
        else:
            identifiers = [self._upload(plugin) for plugin in missing]
            task = self.console.install_packages(identifiers)
        if task:
            try:
                self.console.wait_for_task(
                    task,
                    timeout=self.plugin_timeout,
                    on_progress=lambda t: self.report(PLUGINS_STEP, "waiting", _task_progress(t)),
                )
            except PluginInstallFailed as exc:
                raise StepFailed(
                    PLUGINS_STEP,
                    str(exc),
                    hint="see `difystack logs plugin_daemon`; a re-run retries the install",
                ) from None
        self.log.add(Action("dify", "install-plugins", ", ".join(missing), self.plugin_config.source))
        self.report(PLUGINS_STEP, "ready", f"installed {', '.join(missing)}")

    def _upload(self, plugin: str) -> str:
        path = Path(self.plugin_config.packages[plugin]).expanduser()
        if not path.is_absolute():
            path = self.config_dir / path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StepFailed(
                PLUGINS_STEP, f"dify.plugins.packages.{plugin}: cannot read {path} ({exc.strerror})"
            ) from None
        return self.console.upload_package(data, path.name)

    # -- registrations --------------------------------------------------------------------------

    def plan_registration(self, registration: Registration) -> list[Action]:
        provider = self.console.provider_id(registration.provider)
        record = self.console.model_credentials(provider, registration.model, registration.model_type)
        kind = self._decide(registration, record)
        return (
            []
            if kind is None
            else [Action("dify", kind, registration.key, registration.credentials["server_url"])]
        )

    def _decide(self, registration: Registration, record: Mapping[str, Any] | None) -> str | None:
        if not self.console.uses_credentials_api():
            stored = (record or {}).get("credentials") or {}
            return (
                None
                if stored and same_credentials(stored, registration.public_credentials())
                else "save-model"
            )
        ours = _our_credential(record)
        if record is None or ours is None:
            return "create-credential"
        if record.get("current_credential_id") != ours:
            return "update-credential"  # followed by a switch
        stored = record.get("credentials") or {}
        fingerprint_changed = self.fingerprints.get(registration.key, "") != registration.secret_fingerprint()
        if same_credentials(stored, registration.public_credentials()) and not fingerprint_changed:
            return None
        return "update-credential"

    def register(self, registration: Registration, verify: Callable[[], str]) -> str:
        """Converge one registration; ``verify`` makes a real call to the model first."""
        step = registration_step(registration)
        provider = self.console.provider_id(registration.provider)
        record = self.console.model_credentials(provider, registration.model, registration.model_type)
        kind = self._decide(registration, record)
        if kind is None:
            self.report(step, "ready", "registered, unchanged")
            return "unchanged"
        self.report(step, "waiting", "verifying the model answers")
        verified = verify()
        self.report(step, "waiting", f"{verified}; registering")
        args = (provider, registration.model, registration.model_type)
        try:
            if kind == "save-model":
                self.console.save_model_legacy(*args, registration.credentials)
            elif kind == "create-credential":
                self.console.create_credential(*args, registration.credentials, name=CREDENTIAL_NAME)
                ours = _our_credential(self.console.model_credentials(*args))
                record = self.console.model_credentials(*args)
                if ours and record and record.get("current_credential_id") != ours:
                    self.console.switch_credential(*args, ours)
            else:
                ours = _our_credential(record)
                assert ours is not None
                self.console.update_credential(*args, ours, registration.credentials, name=CREDENTIAL_NAME)
                if record and record.get("current_credential_id") != ours:
                    self.console.switch_credential(*args, ours)
        except HttpError as exc:
            raise StepFailed(step, exc.server_message) from None
        self.fingerprints[registration.key] = registration.secret_fingerprint()
        self.log.add(Action("dify", kind, registration.key, registration.credentials["server_url"]))
        self.report(step, "ready", kind.replace("-", " "))
        return kind

    # -- default models -------------------------------------------------------------------------

    def wrong_defaults(self) -> dict[str, tuple[str, str]]:
        wrong = {}
        for model_type, (provider_short, model) in self.desired.default_models.items():
            provider = self.console.provider_id(provider_short)
            current = self.console.default_model(model_type)
            if not current or current.get("model") != model or _provider_of(current) != provider:
                wrong[model_type] = (provider, model)
        return wrong

    def ensure_defaults(self) -> None:
        if not self.desired.default_models:
            return
        wrong = self.wrong_defaults()
        if not wrong:
            self.report(DEFAULTS_STEP, "ready", _describe_defaults(self.desired.default_models))
            return
        settings = [
            (model_type, self.console.provider_id(provider), model)
            for model_type, (provider, model) in self.desired.default_models.items()
        ]
        self.console.set_default_models(settings)
        still_wrong = self.wrong_defaults()
        if still_wrong:
            raise StepFailed(DEFAULTS_STEP, f"Dify did not keep the default models: {still_wrong}")
        self.log.add(Action("dify", "set-default-models", _describe_defaults(self.desired.default_models)))
        self.report(DEFAULTS_STEP, "ready", _describe_defaults(self.desired.default_models))


def _our_credential(record: Mapping[str, Any] | None) -> str | None:
    for credential in (record or {}).get("available_credentials") or []:
        if credential.get("credential_name") == CREDENTIAL_NAME:
            return str(credential.get("credential_id"))
    return None


def _provider_of(default: Mapping[str, Any]) -> str | None:
    provider = default.get("provider")
    if isinstance(provider, dict):
        return str(provider.get("provider"))
    return str(provider) if provider else None


def _describe_defaults(defaults: Mapping[str, tuple[str, str]]) -> str:
    return ", ".join(
        f"{model_type}={provider}/{model}" for model_type, (provider, model) in sorted(defaults.items())
    )


def _task_progress(task: Mapping[str, Any]) -> str:
    inner = task.get("task", task)
    done = inner.get("completed_plugins", 0)
    total = inner.get("total_plugins", "?")
    return f"install task {inner.get('status', '?')}, {done}/{total} plugins"
