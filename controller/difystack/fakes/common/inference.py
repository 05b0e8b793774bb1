"""Deterministic inference shared by the model-server fakes, with ONE tokeniser.

Token counts: a word or a single punctuation mark is one token, the closer of the two counts
the fakes once had to a real BPE tokeniser (checked against tiktoken's ``gpt2`` on sample
sentences: ``Say hello.`` is 3 tokens there and here, where counting words alone gives 2 and
undercounts every punctuation mark), so usage figures stay believable.

- replies: a fake's fixed sentence, cut at ``max_tokens`` words (finish reason ``length``);
- embeddings: unit vectors, the normalised sum of one random direction per token, seeded by
  the model: the same input always gives the same vector and texts that share words are close,
  so a knowledge base retrieves the segment that matches a query;
- relevance (rerank): word overlap of query and document plus a tiny hash-derived tie breaker.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from functools import lru_cache
from typing import Any

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
MAX_REPLY_WORDS = 256


def tokens(text: str) -> list[str]:
    return TOKEN_PATTERN.findall(text)


def count_tokens(text: str) -> int:
    return len(tokens(text))


def content_text(content: Any) -> str:
    """The text of an OpenAI message ``content``: a string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def message_tokens(messages: list[Any], per_message: int = 0) -> int:
    """The tokens of an OpenAI ``messages`` list, ``per_message`` added for each message."""
    return sum(
        count_tokens(content_text(m.get("content"))) + per_message for m in messages if isinstance(m, dict)
    )


def last_user_text(messages: Any) -> str:
    """The text of the last ``user`` message of an OpenAI ``messages`` list."""
    if not isinstance(messages, list):
        return ""
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return content_text(users[-1].get("content")) if users else ""


def usage_block(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The ``usage`` block of an OpenAI-shaped answer."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def reply_words(text: str, max_tokens: Any) -> tuple[list[str], str]:
    """The words of a reply and its finish reason: ``length`` when ``max_tokens`` cut it."""
    words = text.split()[:MAX_REPLY_WORDS]
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and 0 < max_tokens < len(words):
        return words[:max_tokens], "length"
    return words, "stop"


@lru_cache(maxsize=8192)
def _token_direction(seed: str, dimensions: int) -> tuple[float, ...]:
    generator = random.Random(hashlib.sha256(seed.encode()).digest())
    return tuple(generator.gauss(0.0, 1.0) for _ in range(dimensions))


def embed(model: str, text: str, dimensions: int) -> list[float]:
    """A unit vector for ``text`` under ``model`` (see the module's docstring)."""
    total = [0.0] * dimensions
    for token in tokens(text.lower()) or [""]:
        direction = _token_direction(f"{model}\0{token}", dimensions)
        total = [a + b for a, b in zip(total, direction, strict=True)]
    norm = math.sqrt(sum(value * value for value in total)) or 1.0
    return [value / norm for value in total]


def relevance(model: str, query: str, document: str) -> float:
    """Word overlap plus a tiny hash-derived tie breaker, in [0, 1]."""
    query_words = set(tokens(query.lower()))
    document_words = set(tokens(document.lower()))
    overlap = len(query_words & document_words) / (len(query_words) or 1)
    digest = hashlib.sha256(f"{model}\0{query}\0{document}".encode()).digest()
    jitter = int.from_bytes(digest[:2], "big")
    return round(min(1.0, 0.9 * overlap + 0.1 * jitter / 65535), 6)
