"""Dify: the admin account, the model-provider plugins, the model registrations, the defaults.

Each registration is a credential named ``difystack`` on the model. An identical one is left
alone; a changed one is updated in place; a model registered by someone else gets ours added
and made current. Before anything is written, a real call proves the model answers. One diff
per item decides for ``plan``, ``models`` and ``up`` alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from difystack.clients.dify import DifyConsole, PluginInstallFailed, PluginTaskWait
from difystack.clients.http import HttpError
from difystack.errors import DifystackError
from difystack.paths import StateFile
from difystack.reconcile.context import ConvergeContext
from difystack.reconcile.desired import DesiredState
from difystack.reconcile.report import Action, StepFailed
from difystack.reconcile.server_part import Executors, apply_actions
from difystack.registration import CREDENTIAL_NAME, Registration

ADMIN_STEP = "dify admin"
PLUGINS_STEP = "dify plugins"
DEFAULTS_STEP = "dify default models"
PLUGIN_TIMEOUT = 1800.0


def registration_step(registration: Registration) -> str:
    return f"register {registration.key}"


class SessionStore:
    """The Dify console session, kept between runs (mode 0600) so a re-run need not log in."""

    def __init__(self, file: StateFile) -> None:
        self.file = file

    def load(self, base_url: str) -> dict[str, Any] | None:
        data = self.file.read()
        return data if data.get("base_url") == base_url else None

    def save(self, base_url: str, session: Mapping[str, Any]) -> None:
        self.file.write({"base_url": base_url, **session})


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


class DifyView(Protocol):
    """What the diffs read of a Dify: the live console (``ConsoleView``) or a fresh one."""

    def set_up(self) -> bool: ...

    def missing_plugins(self, wanted: list[str]) -> list[str]: ...

    def uses_credentials_api(self) -> bool: ...

    def provider_id(self, short: str) -> str: ...

    def record(self, registration: Registration) -> Mapping[str, Any] | None: ...

    def default_model(self, model_type: str) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class FreshDify:
    """A Dify nobody has set up: no admin, no plugins, no credentials, no default models."""

    plugins_api: bool = True  # Dify >= 1.0
    credentials_api: bool = True  # Dify >= 1.8

    def set_up(self) -> bool:
        return False

    def missing_plugins(self, wanted: list[str]) -> list[str]:
        return list(wanted) if self.plugins_api else []

    def uses_credentials_api(self) -> bool:
        return self.credentials_api

    def provider_id(self, short: str) -> str:
        return f"langgenius/{short}/{short}" if self.plugins_api else short

    def record(self, registration: Registration) -> Mapping[str, Any] | None:
        return None

    def default_model(self, model_type: str) -> Mapping[str, Any] | None:
        return None


class ConsoleView:
    """The live Dify, read through its console API (logged in, once it is set up)."""

    def __init__(self, console: DifyConsole) -> None:
        self.console = console

    def set_up(self) -> bool:
        return self.console.setup_state() == "finished"

    def missing_plugins(self, wanted: list[str]) -> list[str]:
        if not self.console.has_plugins():
            return []  # Dify 0.x: Xinference and LocalAI are built in
        installed = self.console.installed_plugins()
        return [plugin for plugin in wanted if plugin not in installed]

    def uses_credentials_api(self) -> bool:
        return self.console.uses_credentials_api()

    def provider_id(self, short: str) -> str:
        return self.console.provider_id(short)

    def record(self, registration: Registration) -> Mapping[str, Any] | None:
        provider = self.console.provider_id(registration.provider)
        try:
            return self.console.model_credentials(provider, registration.model, registration.model_type)
        except HttpError as exc:
            if exc.status in (400, 404):  # the provider's plugin is not installed (yet)
                return None
            raise

    def default_model(self, model_type: str) -> Mapping[str, Any] | None:
        return self.console.default_model(model_type)


class DifyPart:
    def __init__(
        self,
        context: ConvergeContext,
        console: DifyConsole,
        desired: DesiredState,
        complete: Callable[[Registration], Registration] = lambda registration: registration,
    ) -> None:
        self.context = context
        self.console = console
        self.desired = desired
        self.complete = complete  # adds what only the run knows (an Xinference API key)
        self.live = ConsoleView(console)
        self.sessions = SessionStore(StateFile(context.paths.dify_session))
        state = context.paths.state_file.read()
        self.fingerprints: dict[str, str] = dict(state.get("credential_fingerprints", {}))
        # Every login (the first, or a re-login after the session expired) is kept for next time.
        console.on_login = lambda session: self.sessions.save(console.base_url, session)

    # -- views ----------------------------------------------------------------------------------

    def observe(self) -> DifyView:
        """What ``plan`` and ``models`` read: the live Dify, logged in; a fresh one before setup
        (reading never sets it up)."""
        if not self.live.set_up():
            return FreshDify(self.console.has_plugins(), self.console.uses_credentials_api())
        self.log_in()
        return self.live

    def fresh(self) -> DifyView:
        return FreshDify()

    # -- the diff -------------------------------------------------------------------------------

    def diff_all(self, view: DifyView) -> list[Action]:
        actions = self.diff_admin(view) + self.diff_plugins(view)
        for registration in self.desired.registrations:
            actions += self.diff_registration(registration, view)
        return actions + self.diff_defaults(view)

    def diff_admin(self, view: DifyView) -> list[Action]:
        return [] if view.set_up() else [Action("dify", "create-admin", self.context.config.dify.admin.email)]

    def diff_plugins(self, view: DifyView) -> list[Action]:
        missing = view.missing_plugins(self.desired.plugins)
        source = self.context.config.dify.plugins.source
        return [Action("dify", "install-plugins", ", ".join(missing), source)] if missing else []

    def diff_registration(self, registration: Registration, view: DifyView) -> list[Action]:
        registration = self.complete(registration)
        kind = self._decide(registration, view)
        if kind is None:
            return []
        return [Action("dify", kind, registration.key, registration.credentials["server_url"])]

    def _decide(self, registration: Registration, view: DifyView) -> str | None:
        record = view.record(registration)
        if not view.uses_credentials_api():
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

    def dify_state(self, registration: Registration, view: DifyView) -> str:
        """The registration as `difystack models` shows it: registered, missing or differs."""
        if not self.diff_registration(registration, view):
            return "registered"
        return "missing" if view.record(registration) is None else "differs"

    def diff_defaults(self, view: DifyView) -> list[Action]:
        defaults = self.desired.default_models
        for model_type, (provider_short, model) in defaults.items():
            current = view.default_model(model_type)
            if (
                not current
                or current.get("model") != model
                or _provider_of(current) != view.provider_id(provider_short)
            ):
                return [Action("dify", "set-default-models", _describe_defaults(defaults))]
        return []

    # -- the steps of `up` ----------------------------------------------------------------------

    def executors(self) -> Executors[Registration | None]:
        return {
            "create-admin": self._create_admin,
            "install-plugins": self._install_plugins,
            "save-model": self._save_model,
            "create-credential": self._create_credential,
            "update-credential": self._update_credential,
            "set-default-models": self._set_default_models,
        }

    def ensure_admin(self) -> None:
        apply_actions(self.executors(), None, self.diff_admin(self.live))
        self.log_in()
        self.context.report(ADMIN_STEP, "ready", f"logged in as {self.context.config.dify.admin.email}")

    def ensure_plugins(self) -> None:
        actions = self.diff_plugins(self.live)
        if not actions:
            self.context.report(PLUGINS_STEP, "ready", ", ".join(self.desired.plugins) or "none needed")
        apply_actions(self.executors(), None, actions)

    def register(self, registration: Registration, verify: Callable[[], str]) -> None:
        """Converge one registration; ``verify`` makes a real call to the model first."""
        registration = self.complete(registration)
        step = registration_step(registration)
        actions = self.diff_registration(registration, self.live)
        if not actions:
            self.context.report(step, "ready", "registered, unchanged")
            return
        self.context.report(step, "waiting", "verifying the model answers")
        verified = verify()
        self.context.report(step, "waiting", f"{verified}; registering")
        apply_actions(self.executors(), registration, actions)

    def ensure_defaults(self) -> None:
        actions = self.diff_defaults(self.live)
        if not actions:
            self.context.report(DEFAULTS_STEP, "ready", _describe_defaults(self.desired.default_models))
        apply_actions(self.executors(), None, actions)

    def log_in(self) -> None:
        """Resume the saved console session, or log in as the admin."""
        email = self.context.config.dify.admin.email
        if not self._resume_session():
            self.context.report(ADMIN_STEP, "waiting", f"logging in as {email}")
            self.console.login(email, self.context.secrets.values["admin_password"])

    def _resume_session(self) -> bool:
        saved = self.sessions.load(self.console.base_url)
        if not saved:
            return False
        admin = self.context.config.dify.admin
        self.console.import_session(saved, admin.email, self.context.secrets.values["admin_password"])
        try:
            self.console.installed_plugins() if self.console.has_plugins() else self.console.providers()
        except (HttpError, DifystackError):
            return False
        return True

    def save_fingerprints(self) -> None:
        """What Dify was given (fingerprints of secret fields): the next run compares against it."""
        self.context.paths.state_file.update(credential_fingerprints=self.fingerprints)

    # -- executors ------------------------------------------------------------------------------

    def _create_admin(self, _: Registration | None, action: Action) -> None:
        dify = self.context.config.dify
        self.context.report(ADMIN_STEP, "waiting", f"creating the admin account {dify.admin.email}")
        self.console.setup(
            dify.admin.email,
            dify.admin.name,
            self.context.secrets.values["admin_password"],
            dify.admin.language,
            init_password=self.context.secrets.values["init_password"] if dify.protect_setup else None,
        )
        self.context.log.add(action)

    def _install_plugins(self, _: Registration | None, action: Action) -> None:
        missing = action.target.split(", ")
        self.context.report(PLUGINS_STEP, "waiting", f"installing {action.target}")
        if self.context.config.dify.plugins.source == "marketplace":
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
            task = self.console.install_packages([self._upload(plugin) for plugin in missing])
        if task:
            self._follow_install(task)
        self.context.log.add(action)
        self.context.report(PLUGINS_STEP, "ready", f"installed {action.target}")

    def _follow_install(self, task: str) -> None:
        try:
            self.context.follow(
                PLUGINS_STEP,
                PluginTaskWait(self.console, task),
                timeout=PLUGIN_TIMEOUT,
                stall_timeout=PLUGIN_TIMEOUT,
                hint="slow dependency installs need a larger PLUGIN_PYTHON_ENV_INIT_TIMEOUT",
            )
        except PluginInstallFailed as exc:
            raise StepFailed(
                PLUGINS_STEP,
                str(exc),
                hint="see `difystack logs plugin_daemon`; a re-run retries the install",
            ) from None

    def _upload(self, plugin: str) -> str:
        path = Path(self.context.config.dify.plugins.packages[plugin]).expanduser()
        if not path.is_absolute():
            path = self.context.config_dir / path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StepFailed(
                PLUGINS_STEP, f"dify.plugins.packages.{plugin}: cannot read {path} ({exc.strerror})"
            ) from None
        return self.console.upload_package(data, path.name)

    def _model_args(self, registration: Registration) -> tuple[str, str, str]:
        provider = self.console.provider_id(registration.provider)
        return provider, registration.model, registration.model_type

    def _save_model(self, registration: Registration | None, action: Action) -> None:
        assert registration is not None
        with self._writing(registration, action):
            self.console.save_model_legacy(*self._model_args(registration), registration.credentials)

    def _create_credential(self, registration: Registration | None, action: Action) -> None:
        assert registration is not None
        args = self._model_args(registration)
        with self._writing(registration, action):
            self.console.create_credential(*args, registration.credentials, name=CREDENTIAL_NAME)
            self._make_ours_current(args)

    def _update_credential(self, registration: Registration | None, action: Action) -> None:
        assert registration is not None
        args = self._model_args(registration)
        with self._writing(registration, action):
            ours = _our_credential(self.console.model_credentials(*args))
            assert ours is not None
            self.console.update_credential(*args, ours, registration.credentials, name=CREDENTIAL_NAME)
            self._make_ours_current(args)

    def _make_ours_current(self, args: tuple[str, str, str]) -> None:
        record = self.console.model_credentials(*args)
        ours = _our_credential(record)
        if ours and record and record.get("current_credential_id") != ours:
            self.console.switch_credential(*args, ours)

    @contextmanager
    def _writing(self, registration: Registration, action: Action) -> Iterator[None]:
        """Around a credential write: the server's refusal names the step; success is recorded."""
        step = registration_step(registration)
        try:
            yield
        except HttpError as exc:
            raise StepFailed(step, exc.server_message) from None
        self.fingerprints[registration.key] = registration.secret_fingerprint()
        self.context.log.add(action)
        self.context.report(step, "ready", action.kind.replace("-", " "))

    def _set_default_models(self, _: Registration | None, action: Action) -> None:
        settings = [
            (model_type, self.console.provider_id(provider), model)
            for model_type, (provider, model) in self.desired.default_models.items()
        ]
        self.console.set_default_models(settings)
        if self.diff_defaults(self.live):
            raise StepFailed(DEFAULTS_STEP, f"Dify did not keep the default models: {action.target}")
        self.context.log.add(action)
        self.context.report(DEFAULTS_STEP, "ready", action.target)


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
