#!/usr/bin/env python3
"""Benchmark `difystack verify` on the stand-in stack: per model, verify's time through Dify beside
the model server's own answer time for the same kind of request (the difference is Dify's api, the
plugin daemon and the plugin; for an embedding model also the document's indexing).

Needs what bench_up.py needs (scripts/provision-docker). It prints figures; it asserts nothing.
Usage: python bench/bench_verify.py [--base-image IMAGE] [--plugin-packages DIR]
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_up import BenchStack, build_standins, standin_parser


def server_answer_time(stack: BenchStack, server: str, model_type: str, model_id: str) -> float:
    """One request of the same kind sent to the model server directly, from this machine."""
    base = f"http://127.0.0.1:{stack.config[server]['port']}"
    if model_type == "llm":
        path = "/v1/chat/completions"
        body: dict[str, object] = {
            "model": model_id,
            "messages": [{"role": "user", "content": "Reply with one word: hello."}],
            "max_tokens": 32,
        }
    else:
        path, body = "/v1/embeddings", {"model": model_id, "input": ["a short document"]}
    started = time.monotonic()
    httpx.post(base + path, json=body, timeout=300).raise_for_status()
    return time.monotonic() - started


def main() -> int:
    args = standin_parser(__doc__).parse_args()
    images = build_standins(args)
    root = Path(tempfile.mkdtemp(prefix="difystack-bench-"))
    stack = BenchStack(root, images)
    try:
        stack.cli("up")
        elapsed, result = stack.cli("verify", "--json")
        rows = json.loads(result.stdout)
        print(f"\nverify: {len(rows)} model(s) in {elapsed:.2f}s (whole command)")
        print(f"{'model':<48} {'through Dify':>12} {'server alone':>12}  result")
        for row in rows:
            model_type = row["model"].rsplit("(", 1)[-1].rstrip(")")
            alone = server_answer_time(stack, row["server"], model_type, row["server_id"])
            result_text = "ok" if row["ok"] else f"failed at {row['hop']}"
            print(f"{row['model']:<48} {row['latency']:>11.2f}s {alone:>11.2f}s  {result_text}")
    finally:
        stack.destroy()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
