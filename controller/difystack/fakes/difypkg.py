"""Build and read ``.difypkg`` plugin packages.

A ``.difypkg`` is a zip archive holding ``manifest.yaml`` (author, name, version, ``type:
plugin``, ``plugins.models`` pointing at provider YAML files...) plus the plugin's code and
assets. The plugin daemon identifies a package by its *unique identifier*
``author/name:version@<sha256 hex of the whole package file>``.

Signatures. Real packages downloaded from the marketplace are signed by langgenius; the
daemon rejects unsigned or badly signed packages while ``FORCE_VERIFYING_SIGNATURE`` is on.
The fake uses its own, documented scheme (it cannot reproduce langgenius' private key):

- the package holds ``.verification.dify.json`` = ``{"authorized_category": "<category>"}``
  (as recent real packages do);
- the zip *comment* holds ``{"signature": "<base64>", "time": <unix seconds>}``, where the
  signature is HMAC-SHA256 with :data:`FAKE_MARKETPLACE_SIGNING_KEY` over the package digest
  (every member's name and SHA-256, sorted by name, then the time).

A package is "signed" when that comment verifies, "unsigned" without a comment and "badly
signed" when the comment does not match the content (e.g. a repackaged official plugin).
Packages are built deterministically (fixed zip timestamps) so the same inputs always give
the same unique identifier; the simulated marketplace relies on that.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import zipfile
from collections.abc import Mapping
from typing import Any, Literal

import yaml

MANIFEST_FILE = "manifest.yaml"
VERIFICATION_FILE = ".verification.dify.json"
FAKE_MARKETPLACE_SIGNING_KEY = b"difystack-fake-marketplace/langgenius-signing-key"
DEFAULT_SIGNED_AT = 1755734400  # 2025-08-21, the snapshot date of the official plugins
_ZIP_DATE = (2025, 8, 21, 0, 0, 0)

SignatureStatus = Literal["valid", "missing", "invalid"]


class PackageError(ValueError):
    """The bytes are not a readable plugin package."""


# ---------------------------------------------------------------------------------------
# Synthetic packages (for the daemon's own checks: decode, identifiers, signatures)
# ---------------------------------------------------------------------------------------


def _i18n(en: str, zh: str | None = None) -> dict[str, str]:
    return {"en_US": en, "zh_Hans": zh or en}


def _form(variable: str, form_type: str, label: str, *, required: bool, **extra: Any) -> dict[str, Any]:
    field: dict[str, Any] = {
        "variable": variable,
        "type": form_type,
        "label": _i18n(label),
        "required": required,
        "show_on": [],
    }
    field.update(extra)
    return field


_MODEL_NAME_FIELD = {
    "label": _i18n("Model Name", "模型名称"),
    "placeholder": _i18n("Enter your model name", "输入模型名称"),
}


# ---------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------


def build_package(
    author: str,
    name: str,
    version: str,
    *,
    signed: bool,
    extra_files: Mapping[str, bytes | str] | None = None,
    provider: Mapping[str, Any] | None = None,
    requirements: list[str] | None = None,
    created_at: str = "2025-08-21T00:00:00Z",
    signed_at: int = DEFAULT_SIGNED_AT,
    authorized_category: str = "langgenius",
) -> bytes:
    """A deterministic ``.difypkg`` for a model-provider plugin.

    ``provider`` is the provider declaration written to ``provider/<name>.yaml`` and listed
    in ``plugins.models``; it defaults to a minimal customizable-model provider. Such a
    package has no runnable plugin code: the daemon decodes it but cannot start it.
    ``extra_files`` may add or replace any member (including ``manifest.yaml``).
    """
    provider_decl = dict(provider) if provider is not None else _default_provider(author, name)
    provider_path = f"provider/{provider_decl.get('provider', name)}.yaml"
    files: dict[str, bytes] = {
        MANIFEST_FILE: _dump_yaml(_manifest(author, name, version, provider_path, created_at)),
        provider_path: _dump_yaml(provider_decl),
        "main.py": b"from dify_plugin import DifyPluginEnv, Plugin\n\nPlugin(DifyPluginEnv()).run()\n",
        "requirements.txt": "\n".join(requirements or ["dify_plugin>=0.9.0"]).encode() + b"\n",
        "_assets/icon_s_en.svg": b'<svg xmlns="http://www.w3.org/2000/svg"/>\n',
        "_assets/icon_l_en.svg": b'<svg xmlns="http://www.w3.org/2000/svg"/>\n',
    }
    if signed:
        files[VERIFICATION_FILE] = json.dumps({"authorized_category": authorized_category}).encode()
    for path, content in (extra_files or {}).items():
        files[path] = content.encode() if isinstance(content, str) else content
    comment = _signature_comment(files, signed_at) if signed else b""
    return _zip(files, comment)


def _default_provider(author: str, name: str) -> dict[str, Any]:
    return {
        "provider": name,
        "label": _i18n(name),
        "description": None,
        "icon_small": _i18n("icon_s_en.svg"),
        "icon_large": None,
        "background": None,
        "help": None,
        "supported_model_types": ["llm"],
        "configurate_methods": ["customizable-model"],
        "provider_credential_schema": None,
        "model_credential_schema": {
            "model": _MODEL_NAME_FIELD,
            "credential_form_schemas": [
                _form("server_url", "text-input", "Server url", required=True),
            ],
        },
        "models": [],
    }


def _manifest(author: str, name: str, version: str, provider_path: str, created_at: str) -> dict[str, Any]:
    return {
        "version": version,
        "type": "plugin",
        "author": author,
        "name": name,
        "label": _i18n(name),
        "description": _i18n(name),
        "icon": "icon_s_en.svg",
        "resource": {
            "memory": 268435456,
            "permission": {
                "model": {
                    "enabled": True,
                    "llm": True,
                    "text_embedding": True,
                    "rerank": True,
                    "tts": True,
                    "speech2text": True,
                    "moderation": False,
                },
                "tool": {"enabled": True},
            },
        },
        "plugins": {"models": [provider_path]},
        "meta": {
            "version": "0.0.1",
            "arch": ["amd64", "arm64"],
            "runner": {"language": "python", "version": "3.12", "entrypoint": "main"},
        },
        "created_at": created_at,
        "privacy": "",
        "verified": False,
    }


def _dump_yaml(data: Mapping[str, Any]) -> bytes:
    return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True).encode()


def _zip(files: Mapping[str, bytes], comment: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(files):
            info = zipfile.ZipInfo(path, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[path])
        archive.comment = comment
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------
# Signatures
# ---------------------------------------------------------------------------------------


def _content_digest(files: Mapping[str, bytes], signed_at: int) -> bytes:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    digest.update(str(signed_at).encode())
    return digest.digest()


def _sign(files: Mapping[str, bytes], signed_at: int) -> str:
    mac = hmac.new(FAKE_MARKETPLACE_SIGNING_KEY, _content_digest(files, signed_at), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def _signature_comment(files: Mapping[str, bytes], signed_at: int) -> bytes:
    return json.dumps({"signature": _sign(files, signed_at), "time": signed_at}).encode()


def signature_status(data: bytes) -> SignatureStatus:
    """Whether the package carries a signature of the fake marketplace that matches it."""
    files, comment = _read_zip(data)
    if not comment:
        return "missing"
    try:
        signature = json.loads(comment)
        expected = _sign(files, int(signature["time"]))
        given = str(signature["signature"])
    except (ValueError, KeyError, TypeError):
        return "invalid"
    return "valid" if hmac.compare_digest(expected, given) else "invalid"


def read_verification(data: bytes) -> dict[str, Any] | None:
    """``{"authorized_category": ...}`` for a validly signed package, else None."""
    if signature_status(data) != "valid":
        return None
    files, _ = _read_zip(data)
    raw = files.get(VERIFICATION_FILE)
    if raw is None:
        return {"authorized_category": "langgenius"}
    return dict(json.loads(raw))


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


def _read_zip(data: bytes) -> tuple[dict[str, bytes], bytes]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            files = {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}
            return files, archive.comment
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise PackageError("zip: not a valid zip file") from exc


def package_files(data: bytes) -> dict[str, bytes]:
    """Every member of the package, by path."""
    return _read_zip(data)[0]


def repackage(data: bytes, extra_files: Mapping[str, bytes | str], *, keep_signature: bool = False) -> bytes:
    """The package with files added or replaced (e.g. bundled wheels for offline installs).

    The result is no longer validly signed: without ``keep_signature`` it is unsigned, with
    it the original signature stays and no longer matches ("bad signature"). Either way the
    daemon only installs it with ``FORCE_VERIFYING_SIGNATURE=false``.
    """
    files, comment = _read_zip(data)
    for path, content in extra_files.items():
        files[path] = content.encode() if isinstance(content, str) else content
    return _zip(files, comment if keep_signature else b"")


def signed(data: bytes, signed_at: int = DEFAULT_SIGNED_AT) -> bytes:
    """The package as the marketplace hands it out: members unchanged, signature added."""
    files, _ = _read_zip(data)
    files.setdefault(VERIFICATION_FILE, json.dumps({"authorized_category": "langgenius"}).encode())
    return _zip(files, _signature_comment(files, signed_at))


def read_manifest(data: bytes) -> dict[str, Any]:
    files, _ = _read_zip(data)
    raw = files.get(MANIFEST_FILE)
    if raw is None:
        raise PackageError("manifest.yaml not found")
    try:
        manifest = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise PackageError(f"failed to parse manifest.yaml: {exc}") from exc
    if not isinstance(manifest, dict):
        raise PackageError("failed to parse manifest.yaml: not a mapping")
    for key in ("author", "name", "version"):
        if not isinstance(manifest.get(key), str) or not manifest[key]:
            raise PackageError(f"manifest.yaml: {key} is required")
    if manifest.get("type", "plugin") != "plugin":
        raise PackageError(f"manifest.yaml: unsupported type {manifest.get('type')!r}")
    return manifest


def read_provider_declarations(data: bytes) -> list[dict[str, Any]]:
    """The model-provider declarations listed under ``plugins.models`` in the manifest."""
    manifest = read_manifest(data)
    files, _ = _read_zip(data)
    declarations = []
    for path in (manifest.get("plugins") or {}).get("models") or []:
        raw = files.get(path)
        if raw is None:
            raise PackageError(f"model provider declaration {path} not found")
        declaration = yaml.safe_load(raw)
        if not isinstance(declaration, dict) or not declaration.get("provider"):
            raise PackageError(f"model provider declaration {path} is invalid")
        declarations.append(declaration)
    return declarations


def package_checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plugin_id(data: bytes) -> str:
    manifest = read_manifest(data)
    return f"{manifest['author']}/{manifest['name']}"


def unique_identifier(data: bytes) -> str:
    """``author/name:version@<sha256 hex of the package>``."""
    manifest = read_manifest(data)
    return f"{manifest['author']}/{manifest['name']}:{manifest['version']}@{package_checksum(data)}"
