"""Package routes: upload (decode, check the signature, store), decode by identifier, and
whether an identifier is known. Packages are read with :mod:`difystack.fakes.difypkg`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from difystack.fakes import difypkg
from difystack.fakes.dify_plugin_daemon.config import DaemonConfig
from difystack.fakes.dify_plugin_daemon.envelope import DaemonError, internal_error, success
from difystack.fakes.dify_plugin_daemon.state import DaemonStore

MISSING_IDENTIFIER = (
    "Key: 'PluginUniqueIdentifier' Error:Field validation for 'PluginUniqueIdentifier' failed on the "
    "'required' tag"
)
SIGNATURE_ERROR = (
    "plugin verification has been enabled, and the plugin you want to install has a bad signature"
)


class PackageHandlers:
    def __init__(self, config: DaemonConfig, store: DaemonStore) -> None:
        self.config = config
        self.store = store

    async def upload_package(self, request: Request) -> Response:
        form = await request.form(max_part_size=self.config.max_package_size + 1024)
        upload = form.get("dify_pkg")
        if upload is None or isinstance(upload, str):
            raise DaemonError("http: no such file")
        data = await upload.read()
        if len(data) > self.config.max_package_size:
            raise DaemonError("file size exceeds the maximum limit")
        verify = self.config.force_verifying_signature or form.get("verify_signature") == "true"
        return success(self.decode_and_store(data, verify_signature=verify))

    def decode_and_store(self, data: bytes, *, verify_signature: bool) -> dict[str, Any]:
        try:
            manifest = difypkg.read_manifest(data)
            providers = difypkg.read_provider_declarations(data)
            status = difypkg.signature_status(data)
        except difypkg.PackageError as exc:
            raise DaemonError(str(exc)) from exc
        if verify_signature and status != "valid":
            raise DaemonError(SIGNATURE_ERROR)
        identifier = difypkg.unique_identifier(data)
        verification = difypkg.read_verification(data)
        decoded = {
            "unique_identifier": identifier,
            "manifest": plugin_declaration(manifest, providers, verified=verification is not None),
            "verification": verification,
        }
        self.store.store_package(identifier, data, decoded)
        return decoded

    async def decode_from_identifier(self, request: Request) -> Response:
        if self.config.binds_query_identifier:
            identifier = request.query_params.get("plugin_unique_identifier", "")
        else:
            try:
                parsed = json.loads(await request.body() or b"{}")
            except ValueError:
                parsed = {}
            identifier = parsed.get("plugin_unique_identifier", "") if isinstance(parsed, dict) else ""
        if not identifier:
            raise DaemonError(MISSING_IDENTIFIER, http_status=400)
        if identifier not in self.store.packages:
            raise internal_error("plugin not found")
        return success(self.store.packages[identifier])

    async def fetch_identifier(self, request: Request) -> Response:
        return success(request.query_params.get("plugin_unique_identifier", "") in self.store.packages)


def plugin_declaration(
    manifest: Mapping[str, Any], providers: list[dict[str, Any]], *, verified: bool
) -> dict[str, Any]:
    """The daemon's PluginDeclaration: the manifest plus the parsed provider declaration."""
    return {
        **manifest,
        "category": "model" if providers else "extension",
        "model": providers[0] if providers else None,
        "tool": None,
        "endpoint": None,
        "agent_strategy": None,
        "tags": manifest.get("tags") or [],
        "verified": verified,
    }
