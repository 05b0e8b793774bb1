"""What every fake shares, one concern a module.

- :mod:`.journal` - the request journal (``GET|DELETE /_fake/requests``), the one thing a fake
  adds to the real API;
- :mod:`.http` - JSON bodies, the ``(method, path, handler, access)`` route tables and the app
  factory every fake is built with;
- :mod:`.readiness` - "ready ``ready_delay`` seconds after start, never with ``never-ready``";
- :mod:`.env` - reading numbers and flags from the environment with errors that name them;
- :mod:`.inference` - deterministic text generation, embeddings and relevance, with the one
  tokeniser every fake counts tokens with;
- :mod:`.streaming` - server-sent events and the OpenAI chat-completion stream;
- :mod:`.tokens` - HS256 JWTs and random keys.
"""
