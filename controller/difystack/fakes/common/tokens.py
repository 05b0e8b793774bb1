"""HS256 JSON web tokens (Xinference's access tokens, Dify's passports) and random keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import string
import time
from collections.abc import Mapping
from typing import Any

KEY_ALPHABET = string.ascii_letters + string.digits
JWT_HEADER = {"alg": "HS256", "typ": "JWT"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def compact_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def hmac_sha256(key: str, message: str) -> bytes:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).digest()


def jwt_encode(payload: Mapping[str, Any], key: str) -> str:
    """An HS256 JWT of ``payload`` signed with ``key``."""
    signing_input = f"{b64url(compact_json(JWT_HEADER))}.{b64url(compact_json(dict(payload)))}"
    return f"{signing_input}.{b64url(hmac_sha256(key, signing_input))}"


def jwt_decode(token: str, key: str) -> dict[str, Any] | None:
    """The payload of a well-signed, unexpired token; None otherwise."""
    try:
        header, body, signature = token.split(".")
        if not hmac.compare_digest(hmac_sha256(key, f"{header}.{body}"), b64url_decode(signature)):
            return None
        payload = json.loads(b64url_decode(body))
    except (ValueError, TypeError):
        return None
    if not isinstance(payload, dict) or float(payload.get("exp", 0)) < time.time():
        return None
    return payload


def random_token(length: int, alphabet: str = KEY_ALPHABET) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))
