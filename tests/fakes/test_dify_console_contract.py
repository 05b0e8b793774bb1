"""Contract tests for the fake Dify 1.x api's console: health, setup and the init-password gate,
login with the version's session scheme (cookies, CSRF), refresh, logout and the login lock.

Expectations come from the reference notes (/work/shared/reference/dify-console-api.md §0-§3),
not from the fakes' code: exact paths, status codes and Dify's ``{"code","message","status"}``
errors. Each test runs the api and the plugin daemon over real sockets.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from difystack.fakes.behaviour import Behaviour
from difystack.fakes.dify_api import create_app as create_api
from tests.fakes.dify_support import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    CONSOLE,
    CSRF_MESSAGE,
    admin,
    dify_error,
    do_setup,
    login,
    login_password,
    running_stack,
)

# ---- health, setup, init ----------------------------------------------------------------------


def test_health_ping_and_version_header(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        health = stack.client.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert health.json()["version"] == "1.13.3"
        assert isinstance(health.json()["pid"], int)
        assert health.headers["X-Version"] == "1.13.3"
        ping = stack.client.get(f"{CONSOLE}/ping")
        assert ping.json() == {"result": "pong"}
        assert ping.headers["X-Version"] == "1.13.3"
        error = stack.client.post(f"{CONSOLE}/login", json={})
        assert error.headers["X-Version"] == "1.13.3"


def test_unsupported_0x_version_fails_at_startup(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"1\.x"):
        create_api(
            Behaviour(), {"DIFYSTACK_FAKE_DIFY_VERSION": "0.15.3", "DIFYSTACK_FAKE_STATE_DIR": str(tmp_path)}
        )


def test_everything_but_setup_answers_not_setup_before_setup(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        assert stack.client.get(f"{CONSOLE}/setup").json() == {"step": "not_started"}
        login = stack.client.post(f"{CONSOLE}/login", json={"email": ADMIN_EMAIL, "password": "x"})
        dify_error(login, 401, "not_setup")
        for path in (
            "/workspaces/current",
            "/workspaces/current/plugin/list",
            "/workspaces/current/model-providers",
        ):
            dify_error(stack.client.get(CONSOLE + path), 401, "not_setup")
        assert stack.client.get(f"{CONSOLE}/system-features").status_code == 200


def test_setup_creates_the_admin_once(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        response = stack.client.post(
            f"{CONSOLE}/setup",
            json={"email": ADMIN_EMAIL, "name": "admin", "password": ADMIN_PASSWORD, "language": "en-US"},
        )
        assert response.status_code == 201
        assert response.json() == {"result": "success"}
        status = stack.client.get(f"{CONSOLE}/setup").json()
        assert status["step"] == "finished" and status["setup_at"]
        again = stack.client.post(
            f"{CONSOLE}/setup", json={"email": "other@example.com", "name": "x", "password": ADMIN_PASSWORD}
        )
        dify_error(again, 403, "already_setup")
        # the email was lower-cased when stored: the lower-case login works
        assert login(stack).get("/workspaces/current").status_code == 200


INVALID_SETUP_BODIES = [
    {"email": "a@example.com", "name": "admin", "password": "short1"},
    {"email": "a@example.com", "name": "admin", "password": "onlyletters"},
    {"email": "a@example.com", "name": "admin", "password": "1234567890"},
    {"email": "a@example.com", "name": "x" * 31, "password": ADMIN_PASSWORD},
    {"email": "not-an-email", "name": "admin", "password": ADMIN_PASSWORD},
    {"email": "a@example.com", "name": "admin"},
]


def test_setup_rejects_invalid_fields(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        for body in INVALID_SETUP_BODIES:
            dify_error(stack.client.post(f"{CONSOLE}/setup", json=body), 400, "invalid_param")
        message = dify_error(
            stack.client.post(f"{CONSOLE}/setup", json=INVALID_SETUP_BODIES[0]), 400, "invalid_param"
        )
        assert message == "Password must contain letters and numbers, and the length must be greater than 8."
        assert stack.client.get(f"{CONSOLE}/setup").json() == {"step": "not_started"}


def test_init_password_gate_needs_the_session_cookie(tmp_path: Path) -> None:
    with running_stack(tmp_path, api_env={"INIT_PASSWORD": "init-secret"}) as stack:
        setup_body = {"email": ADMIN_EMAIL, "name": "admin", "password": ADMIN_PASSWORD}
        assert stack.client.get(f"{CONSOLE}/init").json() == {"status": "not_started"}
        dify_error(
            stack.client.post(f"{CONSOLE}/login", json={"email": "a@b.c", "password": "x"}),
            401,
            "not_init_validated",
        )
        dify_error(stack.client.get(f"{CONSOLE}/workspaces/current"), 401, "not_init_validated")
        dify_error(stack.client.post(f"{CONSOLE}/setup", json=setup_body), 401, "not_init_validated")
        dify_error(
            stack.client.post(f"{CONSOLE}/init", json={"password": "wrong"}), 401, "init_validate_failed"
        )

        validated = stack.client.post(f"{CONSOLE}/init", json={"password": "init-secret"})
        assert validated.status_code == 201
        assert validated.json() == {"result": "success"}
        assert "session" in validated.cookies
        assert stack.client.get(f"{CONSOLE}/init").json() == {"status": "finished"}

        # another cookie jar has not been validated
        with httpx.Client(base_url=stack.api_url) as stranger:
            dify_error(stranger.post(f"{CONSOLE}/setup", json=setup_body), 401, "not_init_validated")
        assert stack.client.post(f"{CONSOLE}/setup", json=setup_body).status_code == 201
        dify_error(
            stack.client.post(f"{CONSOLE}/init", json={"password": "init-secret"}), 403, "already_setup"
        )
        assert login(stack).get("/workspaces/current").status_code == 200


# ---- login, cookies, CSRF ---------------------------------------------------------------------


def test_login_on_1_13_needs_a_base64_password_and_sets_three_cookies(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        do_setup(stack)
        plain = stack.client.post(f"{CONSOLE}/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        assert dify_error(plain, 401, "authentication_failed") in {
            "Invalid encrypted data",
            "Invalid email or password.",
        }

        response = stack.client.post(
            f"{CONSOLE}/login",
            json={"email": ADMIN_EMAIL, "password": login_password(stack), "remember_me": True},
        )
        assert response.status_code == 200
        assert response.json() == {"result": "success"}  # no tokens in the body any more
        cookies = {header.split("=", 1)[0]: header for header in response.headers.get_list("set-cookie")}
        assert set(cookies) == {"access_token", "refresh_token", "csrf_token"}
        assert "HttpOnly" in cookies["access_token"] and "HttpOnly" in cookies["refresh_token"]
        assert "HttpOnly" not in cookies["csrf_token"]
        for header in cookies.values():
            assert "Path=/" in header and "samesite=lax" in header.lower() and "Secure" not in header
        assert "Max-Age=3600" in cookies["access_token"]


def test_https_console_urls_give_host_prefixed_secure_cookies(tmp_path: Path) -> None:
    https = {"CONSOLE_API_URL": "https://dify.example.com", "CONSOLE_WEB_URL": "https://dify.example.com"}
    with running_stack(tmp_path, api_env=https) as stack:
        do_setup(stack)
        response = stack.client.post(
            f"{CONSOLE}/login", json={"email": ADMIN_EMAIL, "password": login_password(stack)}
        )
        names = {header.split("=", 1)[0]: header for header in response.headers.get_list("set-cookie")}
        assert set(names) == {"__Host-access_token", "__Host-refresh_token", "__Host-csrf_token"}
        assert all("Secure" in header for header in names.values())


def test_csrf_is_checked_on_every_method(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        console = admin(stack)
        csrf = stack.client.cookies["csrf_token"]
        current = f"{CONSOLE}/workspaces/current"
        assert dify_error(stack.client.get(current), 401, "unauthorized") == CSRF_MESSAGE
        wrong = {"X-CSRF-Token": csrf[:-2] + "xx"}
        assert dify_error(stack.client.get(current, headers=wrong), 401, "unauthorized") == CSRF_MESSAGE
        install = f"{CONSOLE}/workspaces/current/plugin/install/pkg"
        body = {"plugin_unique_identifiers": []}
        assert dify_error(stack.client.post(install, json=body), 401, "unauthorized") == CSRF_MESSAGE
        models = f"{CONSOLE}/workspaces/current/model-providers"
        assert dify_error(stack.client.get(models, headers=wrong), 401, "unauthorized") == CSRF_MESSAGE

        workspace = console.get("/workspaces/current")
        assert workspace.status_code == 200
        assert workspace.json()["role"] == "owner"
        assert console.get("/workspaces/current/plugin/list").status_code == 200

        # The documented alternative: Bearer + csrf cookie + matching header, no session cookie jar.
        access = stack.client.cookies["access_token"]
        with httpx.Client(base_url=stack.api_url) as bare:
            headers = {
                "Authorization": f"Bearer {access}",
                "X-CSRF-Token": csrf,
                "Cookie": f"csrf_token={csrf}",
            }
            assert bare.get(current, headers=headers).status_code == 200
            dify_error(bare.get(current), 401, "unauthorized")


def test_before_1_9_2_tokens_come_in_the_body_and_bearer_needs_no_csrf(tmp_path: Path) -> None:
    with running_stack(tmp_path, version="1.9.0") as stack:
        do_setup(stack)
        response = stack.client.post(
            f"{CONSOLE}/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "remember_me": True}
        )
        assert response.status_code == 200
        data = response.json()["data"]
        assert response.json()["result"] == "success" and data["access_token"] and data["refresh_token"]
        assert not response.headers.get_list("set-cookie")
        current = f"{CONSOLE}/workspaces/current"
        assert (
            stack.client.get(current, headers={"Authorization": f"Bearer {data['access_token']}"}).status_code
            == 200
        )
        dify_error(stack.client.get(current), 401, "unauthorized")
        refreshed = stack.client.post(
            f"{CONSOLE}/refresh-token", json={"refresh_token": data["refresh_token"]}
        )
        assert refreshed.status_code == 200 and refreshed.json()["data"]["access_token"]
        assert (
            stack.client.post(f"{CONSOLE}/refresh-token", json={"refresh_token": "nope"}).status_code == 401
        )


def test_refresh_and_logout_with_cookies(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        admin(stack)
        refreshed = stack.client.post(f"{CONSOLE}/refresh-token")
        assert refreshed.status_code == 200
        assert refreshed.json() == {"result": "success"}
        assert "csrf_token" in refreshed.cookies
        assert stack.client.post(f"{CONSOLE}/logout").json() == {"result": "success"}
        with httpx.Client(base_url=stack.api_url) as anonymous:
            failed = anonymous.post(f"{CONSOLE}/refresh-token")
            assert failed.status_code == 401
            assert failed.json()["result"] == "fail"


def test_five_failed_logins_lock_the_account(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        do_setup(stack)
        wrong = login_password(stack, "WrongPassw0rd")
        for _ in range(5):
            response = stack.client.post(f"{CONSOLE}/login", json={"email": ADMIN_EMAIL, "password": wrong})
            assert dify_error(response, 401, "authentication_failed") == "Invalid email or password."
        locked = stack.client.post(
            f"{CONSOLE}/login", json={"email": ADMIN_EMAIL, "password": login_password(stack)}
        )
        dify_error(locked, 429, "email_code_login_limit")
