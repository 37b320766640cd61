"""Byte-level tokenizer: UTF-8 bytes are ids 0-255, plus four special ids.

No vocabulary file, no download: any text in any language round-trips.
"""

from __future__ import annotations

import numpy as np

PAD = 256
BOS = 257
EOS = 258
MASK = 259
VOCAB_SIZE = 260


def encode(text: str, *, bos: bool = True, eos: bool = True) -> np.ndarray:
    """Token ids (int64) of `text`: [BOS] + UTF-8 bytes + [EOS]."""
    body = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
    parts = [np.array([BOS], dtype=np.int64)] if bos else []
    parts.append(body)
    if eos:
        parts.append(np.array([EOS], dtype=np.int64))
    return np.concatenate(parts)


def decode(ids) -> str:
    """Text of `ids`; special ids are dropped, invalid UTF-8 is replaced."""
    data = bytes(int(i) for i in ids if 0 <= int(i) < 256)
    return data.decode("utf-8", errors="replace")
