"""What the fake Dify's simulated marketplace serves: real plugin packages, signed.

The marketplace is given a directory of ``.difypkg`` files (``DIFYSTACK_FAKE_MARKETPLACE_PACKAGES``;
the api stand-in image bakes Dify's official packages there). It serves the newest version of
each plugin with the fake marketplace signature added (see :mod:`~difystack.fakes.difypkg`), as
the real marketplace serves langgenius-signed packages. A plugin it was not given is not in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from difystack.config_model import version_tuple
from difystack.fakes import difypkg


@dataclass
class Marketplace:
    directory: Path | None
    _latest: dict[str, bytes] | None = field(default=None, init=False)

    def packages(self) -> dict[str, bytes]:
        """The signed package of each plugin's newest version, by plugin id."""
        if self._latest is None:
            found: dict[str, tuple[tuple[int, ...], bytes]] = {}
            files = sorted(self.directory.glob("*.difypkg")) if self.directory else []
            for path in files:
                data = path.read_bytes()
                version = version_tuple(str(difypkg.read_manifest(data)["version"]))
                plugin_id = difypkg.plugin_id(data)
                if plugin_id not in found or version > found[plugin_id][0]:
                    found[plugin_id] = (version, data)
            self._latest = {plugin_id: difypkg.signed(data) for plugin_id, (_, data) in found.items()}
        return self._latest

    def latest(self, plugin_id: str) -> bytes | None:
        return self.packages().get(plugin_id)

    def download(self, identifier: str) -> bytes | None:
        for package in self.packages().values():
            if difypkg.unique_identifier(package) == identifier:
                return package
        return None
