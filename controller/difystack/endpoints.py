"""The URLs of a stack: as difystack (on the host) reaches them, and as Dify's containers do."""

from __future__ import annotations

from dataclasses import dataclass

from difystack.config_model import ExternalServer, StackConfig

XINFERENCE_SERVICE_URL = "http://xinference:9997"
LOCALAI_SERVICE_URL = "http://localai:8080"


@dataclass(frozen=True)
class ServerEndpoint:
    from_host: str
    from_dify: str
    external: bool


@dataclass(frozen=True)
class Endpoints:
    dify: str | None
    xinference: ServerEndpoint | None
    localai: ServerEndpoint | None


def host_address(bind_address: str) -> str:
    """Where this machine reaches a port published on ``bind_address``."""
    if bind_address in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{bind_address}]" if ":" in bind_address else bind_address


def _server(
    enabled: bool, external: ExternalServer | None, host: str, port: int, service_url: str
) -> ServerEndpoint | None:
    if not enabled:
        return None
    if external is not None:
        return ServerEndpoint(external.url, external.dify_url, external=True)
    return ServerEndpoint(f"http://{host}:{port}", service_url, external=False)


def stack_endpoints(config: StackConfig) -> Endpoints:
    host = host_address(config.bind_address)
    return Endpoints(
        dify=f"http://{host}:{config.dify.port}" if config.dify.enabled else None,
        xinference=_server(
            config.xinference.enabled,
            config.xinference.external,
            host,
            config.xinference.port,
            XINFERENCE_SERVICE_URL,
        ),
        localai=_server(
            config.localai.enabled, config.localai.external, host, config.localai.port, LOCALAI_SERVICE_URL
        ),
    )
