"""`difystack render` through the real entry point: exit codes, one-line errors, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import user_env


def run_cli(
    *args: str, home: Path, cwd: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = user_env(DIFYSTACK_HOME=home, COLUMNS="200", **(extra_env or {}))
    return subprocess.run(
        [sys.executable, "-m", "difystack", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )


def test_render_writes_a_project_and_reports_where(tmp_path: Path) -> None:
    result = run_cli("render", "--out", str(tmp_path / "out"), home=tmp_path / "home", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "docker-compose.yml").exists()
    assert str(tmp_path / "out") in result.stdout
    secrets = (tmp_path / "home" / "difystack" / "secrets.yaml").read_text()
    # The output names the secrets file but never shows a value.
    for line in secrets.splitlines():
        if ": " in line and not line.startswith("#"):
            assert line.split(": ", 1)[1] not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("stack_yaml", "field"),
    [
        ("dify:\n  prot: 81\n", "dify.prot"),
        ("dify:\n  port: eighty\n", "dify.port"),
        (
            "xinference:\n  models:\n"
            "    - {uid: a, type: embedding, name: x}\n    - {uid: a, type: embedding, name: y}\n",
            "xinference.models[1].uid",
        ),
        (
            "xinference:\n  models:\n    - {uid: org/x, type: embedding, name: x}\n",
            "xinference.models[0].uid",
        ),
        ("xinference:\n  port: 80\n", "xinference.port"),
        ("localai:\n  models: []\n", "localai.models"),
    ],
)
def test_bad_config_exits_nonzero_with_one_line_and_writes_nothing(
    tmp_path: Path, stack_yaml: str, field: str
) -> None:
    (tmp_path / "difystack.yaml").write_text(stack_yaml, encoding="utf-8")
    out = tmp_path / "out"
    result = run_cli(
        "render", "-c", "difystack.yaml", "--out", str(out), home=tmp_path / "home", cwd=tmp_path
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and f"{field}: " in lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert not (tmp_path / "home").exists()


def test_missing_stack_file_is_named(tmp_path: Path) -> None:
    result = run_cli("render", "-c", "nope.yaml", home=tmp_path / "home", cwd=tmp_path)
    assert result.returncode == 2
    assert "nope.yaml: no such stack file" in result.stderr


def test_custom_path_that_does_not_exist_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "difystack.yaml").write_text(
        "localai:\n  enabled: false\nxinference:\n  models:\n"
        "    - {uid: m, type: embedding, name: m, custom: {path: ./missing, dimensions: 8}}\n",
        encoding="utf-8",
    )
    result = run_cli(
        "render", "-c", "difystack.yaml", "--out", str(tmp_path / "out"), home=tmp_path / "home", cwd=tmp_path
    )
    assert result.returncode != 0
    assert "xinference.models[0].custom.path" in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "home").exists()


def test_secrets_show_is_the_explicit_way_to_read_them(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli("render", home=home, cwd=tmp_path).returncode == 0
    shown = run_cli("secrets", "show", "admin_password", home=home, cwd=tmp_path)
    assert shown.returncode == 0
    stored = (home / "difystack" / "secrets.yaml").read_text()
    value = shown.stdout.strip().split("=", 1)[1]
    assert f"admin_password: {value}" in stored
    unknown = run_cli("secrets", "show", "nope", home=home, cwd=tmp_path)
    assert unknown.returncode == 1 and "no secret named nope" in unknown.stderr


def test_env_layer_reaches_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(
        "render",
        "--out",
        str(out),
        home=tmp_path / "home",
        cwd=tmp_path,
        extra_env={"DIFYSTACK_DIFY__PORT": "8123"},
    )
    assert result.returncode == 0, result.stderr
    assert 'published: "8123"' in (out / "docker-compose.yml").read_text()


def test_plan_of_a_stack_that_is_not_running_lists_every_step(tmp_path: Path) -> None:
    import json

    from tests.conftest import free_port

    stack_file = tmp_path / "difystack.yaml"
    stack_file.write_text(
        f"xinference:\n  port: {free_port()}\n  models:\n"
        "    - {uid: mini, type: embedding, name: my-mini, dimensions: 384,\n"
        "       custom: {server_path: /models/mini, dimensions: 384}}\n"
        f"localai:\n  enabled: false\ndify:\n  port: {free_port()}\n"
    )
    result = run_cli("plan", "--json", "-c", str(stack_file), home=tmp_path / "home", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    actions = [(a["part"], a["kind"], a["target"], a["detail"]) for a in json.loads(result.stdout)]
    assert actions[0][:3] == ("compose", "render-and-start", "difystack")
    assert actions[1] == ("compose", "start", "difystack", "xinference, dify are not reachable")
    # The one diff, against servers as they start: every step of a first `up`.
    assert actions[2:] == [
        ("xinference", "register-custom", "my-mini", "file:///models/mini"),
        ("xinference", "launch", "mini", "my-mini"),
        ("dify", "create-admin", "admin@example.com", ""),
        ("dify", "install-plugins", "langgenius/xinference", "marketplace"),
        ("dify", "create-credential", "xinference/mini (text-embedding)", "http://xinference:9997"),
        ("dify", "set-default-models", "text-embedding=xinference/mini", ""),
    ]


def test_standins_without_plugin_packages_name_the_option_and_build_nothing(tmp_path: Path) -> None:
    # The daemon stand-in runs Dify's real plugins and the api's marketplace serves them: no
    # packages, no stand-ins (checked before the engine is asked anything).
    no_packages = {"DIFYSTACK_PLUGIN_PACKAGES": ""}
    result = run_cli("standins", "build", home=tmp_path / "home", cwd=tmp_path, extra_env=no_packages)
    assert result.returncode != 0
    assert "dify-api and dify-plugin-daemon stand-ins run and serve Dify's real plugins" in result.stderr
    assert "--plugin-packages DIR or DIFYSTACK_PLUGIN_PACKAGES" in result.stderr
    assert "Traceback" not in result.stderr
