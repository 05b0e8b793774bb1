"""`difystack register` against servers someone else set up: an Xinference with its accounts on
(the default since 3.0) and a Dify whose admin was created by hand. The command runs the way a
user's shell runs it, with every difystack setting of the session exported."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from difystack import settings
from difystack.clients.dify import DifyConsole
from difystack.clients.http import HttpError
from difystack.clients.xinference import XinferenceClient
from difystack.fakes.behaviour import Behaviour
from difystack.fakes.dify_api import create_app as create_api
from difystack.fakes.dify_plugin_daemon import create_app as create_daemon
from difystack.fakes.xinference import create_app as create_xinference
from tests.conftest import serve_app
from tests.fakes.real_plugins import real_plugins_env
from tests.unit.test_cli_render import run_cli

ADMIN_EMAIL = "admin@example.com"
DIFY_PASSWORD = "Hand-made-Passw0rd"
XINFERENCE_ADMIN = ("boss", "Xinf-Passw0rd-by-hand")
LOGIN_VARIABLES = {
    settings.XINFERENCE_USERNAME.name: "",
    settings.XINFERENCE_PASSWORD.name: "",
    settings.XINFERENCE_TOKEN.name: "",
    settings.XINFERENCE_API_KEY.name: "",
    settings.XINFERENCE_SETUP_TOKEN.name: "",
}


@dataclass
class ByHand:
    dify: str
    xinference: str


@pytest.fixture
def servers_set_up_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[ByHand]:
    with ExitStack() as stack:
        xinference_env = {"XINFERENCE_HOME": str(tmp_path / "xh"), "XINFERENCE_AUTH_ADVANCED": "1"}
        xinference = stack.enter_context(
            serve_app(create_xinference(Behaviour(launch_latency=0.1), xinference_env))
        )
        daemon_env = {
            "SERVER_KEY": "k",
            "PLUGIN_STORAGE_LOCAL_ROOT": str(tmp_path / "daemon"),
            **real_plugins_env(),
        }
        daemon = stack.enter_context(serve_app(create_daemon(Behaviour(), daemon_env)))
        api_env = {
            "SECRET_KEY": "s",
            "PLUGIN_DAEMON_URL": daemon,
            "PLUGIN_DAEMON_KEY": "k",
            "DIFYSTACK_FAKE_STATE_DIR": str(tmp_path / "api"),
            **real_plugins_env(),
        }
        dify = stack.enter_context(serve_app(create_api(Behaviour(), api_env)))
        # A person set both up: the Xinference admin with the token its log printed, the Dify admin.
        setup_token = re.findall(r"Setup token:\s*(\S+)", capsys.readouterr().out)[-1]
        with XinferenceClient(xinference) as client:
            client.setup_admin(setup_token, *XINFERENCE_ADMIN)
        with DifyConsole(dify) as console:
            console.setup(ADMIN_EMAIL, "admin", DIFY_PASSWORD)
        yield ByHand(dify, xinference)


def register(servers: ByHand, tmp_path: Path, **env: str) -> tuple[int, str, str]:
    result = run_cli(
        "register",
        "--dify-url",
        servers.dify,
        "--xinference-url",
        servers.xinference,
        "--xinference-url-from-dify",  # this Dify runs on this machine, not in a container
        servers.xinference,
        "--set",
        "localai.enabled=false",
        home=tmp_path / "home",
        cwd=tmp_path,
        extra_env={**LOGIN_VARIABLES, settings.DIFY_ADMIN_PASSWORD.name: DIFY_PASSWORD, **env},
    )
    return result.returncode, result.stdout, result.stderr


def running_models(servers: ByHand) -> set[str]:
    with XinferenceClient(servers.xinference) as client:
        client.use_token(client.login(*XINFERENCE_ADMIN))
        return set(client.running_models())


def dify_credentials(servers: ByHand) -> dict[str, str] | None:
    with DifyConsole(servers.dify) as console:
        console.login(ADMIN_EMAIL, DIFY_PASSWORD)
        try:
            record = console.model_credentials(
                "langgenius/xinference/xinference", "qwen2.5-instruct-0.5b", "llm"
            )
        except HttpError as exc:  # 400: the provider's plugin is not even installed
            if exc.status != 400:
                raise
            return None
    return None if record is None else record.get("credentials")


def test_without_the_xinference_login_register_names_the_option_and_variable_and_changes_nothing(
    servers_set_up_by_hand: ByHand, tmp_path: Path
) -> None:
    code, _, err = register(servers_set_up_by_hand, tmp_path)
    assert code != 0
    error_lines = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(error_lines) == 1, err
    assert "--xinference-username" in error_lines[0] and settings.XINFERENCE_USERNAME.name in error_lines[0]
    assert running_models(servers_set_up_by_hand) == set()
    assert installed_plugins(servers_set_up_by_hand) == set()


def installed_plugins(servers: ByHand) -> set[str]:
    with DifyConsole(servers.dify) as console:
        console.login(ADMIN_EMAIL, DIFY_PASSWORD)
        return set(console.installed_plugins())


def test_with_the_xinference_login_in_the_environment_register_launches_and_gives_dify_an_api_key(
    servers_set_up_by_hand: ByHand, tmp_path: Path
) -> None:
    username, password = XINFERENCE_ADMIN
    login = {settings.XINFERENCE_USERNAME.name: username, settings.XINFERENCE_PASSWORD.name: password}
    code, out, err = register(servers_set_up_by_hand, tmp_path, **login)
    assert code == 0, out + err
    assert running_models(servers_set_up_by_hand) == {"qwen2.5-instruct-0.5b", "bge-small-en-v1.5"}
    credentials = dify_credentials(servers_set_up_by_hand)
    assert credentials is not None and credentials.get("api_key"), credentials
    assert password not in out + err
    # A second run changes nothing.
    code, out, err = register(servers_set_up_by_hand, tmp_path, **login)
    assert code == 0 and "0 change(s)" in out, out[out.find("Done.") :]


def test_a_wrong_dify_admin_password_ends_with_one_line_naming_the_admin_login(
    servers_set_up_by_hand: ByHand, tmp_path: Path
) -> None:
    username, password = XINFERENCE_ADMIN
    code, _, err = register(
        servers_set_up_by_hand,
        tmp_path,
        **{
            settings.XINFERENCE_USERNAME.name: username,
            settings.XINFERENCE_PASSWORD.name: password,
            settings.DIFY_ADMIN_PASSWORD.name: "Wrong-Passw0rd",
        },
    )
    assert code != 0
    error_lines = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(error_lines) == 1 and ADMIN_EMAIL in error_lines[0], err
    assert dify_credentials(servers_set_up_by_hand) is None


def test_a_stack_with_an_external_xinference_takes_its_login_from_the_environment(
    servers_set_up_by_hand: ByHand, tmp_path: Path
) -> None:
    username, password = XINFERENCE_ADMIN
    external = ("--set", f"xinference.external.url={servers_set_up_by_hand.xinference}")
    without = run_cli(
        "models", "--json", *external, home=tmp_path / "home", cwd=tmp_path, extra_env=LOGIN_VARIABLES
    )
    assert without.returncode != 0 and settings.XINFERENCE_USERNAME.name in without.stderr, without.stderr
    login = {settings.XINFERENCE_USERNAME.name: username, settings.XINFERENCE_PASSWORD.name: password}
    given = run_cli(
        "models",
        "--json",
        *external,
        home=tmp_path / "home",
        cwd=tmp_path,
        extra_env={**LOGIN_VARIABLES, **login},
    )
    assert given.returncode == 0, given.stderr
    assert password not in given.stdout + given.stderr
    # Kept in the stack's secrets: the next command needs the variables no more.
    later = run_cli(
        "models", "--json", *external, home=tmp_path / "home", cwd=tmp_path, extra_env=LOGIN_VARIABLES
    )
    assert later.returncode == 0, later.stderr
