"""One model as Dify knows it: provider, model name and type, the server id it runs under, and
the credentials difystack gives Dify for it (empty where only the identity matters)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

CREDENTIAL_NAME = "difystack"
# Credential fields Dify stores obfuscated: compared through a fingerprint, never read back.
SECRET_CREDENTIAL_FIELDS = frozenset({"api_key"})


@dataclass(frozen=True)
class Registration:
    provider: str  # short: xinference | localai
    model: str  # the model name Dify shows
    model_type: str  # llm | text-embedding | rerank
    credentials: dict[str, str]
    server_id: str  # the uid / LocalAI name the model runs under
    field: str  # its config path, for messages

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model} ({self.model_type})"

    def public_credentials(self) -> dict[str, str]:
        return {k: v for k, v in self.credentials.items() if k not in SECRET_CREDENTIAL_FIELDS}

    def secret_fingerprint(self) -> str:
        secret = {k: v for k, v in sorted(self.credentials.items()) if k in SECRET_CREDENTIAL_FIELDS}
        return hashlib.sha256(json.dumps(secret).encode()).hexdigest()[:16] if secret else ""
