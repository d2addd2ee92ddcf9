"""Pure-Python tokenisation, shared by training and serving so the two can never disagree."""

from __future__ import annotations

import re

PAD_ID = 0
OOV_ID = 1
TOKEN_PATTERN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")  # the phone snippets tokenize with the same pattern
_TOKEN = TOKEN_PATTERN


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    return _TOKEN.findall(text.lower() if lowercase else text)


def encode(text: str, index: dict[str, int], max_length: int, lowercase: bool = True) -> list[int]:
    """Token ids, truncated or right-padded with PAD_ID to max_length; unknown words become OOV_ID."""
    ids = [index.get(token, OOV_ID) for token in tokenize(text, lowercase)][:max_length]
    return ids + [PAD_ID] * (max_length - len(ids))


def vocabulary_index(vocabulary: list[str]) -> dict[str, int]:
    """Vocabulary lists start with the pad and OOV markers, so a word's id is its position."""
    return {word: i for i, word in enumerate(vocabulary)}
