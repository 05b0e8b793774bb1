"""difystack: Dify + Xinference + LocalAI on one Compose network, models deployed and registered."""

__version__ = "0.1.0"
