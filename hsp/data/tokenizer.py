"""Tokenizers: one small interface, two implementations.

- `ByteTokenizer` (the default; no vocabulary file, no download): UTF-8 bytes are ids
  0-255, plus PAD/BOS/EOS/MASK. Any text in any language round-trips.
- `hsp.data.hf_tokenizer.HFTokenizer`: a local `tokenizer.json` through the
  `tokenizers` library (BPE, Unigram, WordPiece, ...).

`load_tokenizer(spec)` builds either from a string that other processes can rebuild
it from ("" or "byte", or a path). Every tokenizer has a `fingerprint` (a hash of
everything that decides its ids) that prepared data records, so data and training can
be checked to use the same tokenizer.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

import numpy as np

PAD = 256
BOS = 257
EOS = 258
MASK = 259
VOCAB_SIZE = 260


def encode(text: str, *, bos: bool = True, eos: bool = True) -> np.ndarray:
    """Byte-tokenizer ids (int64) of `text`: [BOS] + UTF-8 bytes + [EOS]."""
    body = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
    parts = [np.array([BOS], dtype=np.int64)] if bos else []
    parts.append(body)
    if eos:
        parts.append(np.array([EOS], dtype=np.int64))
    return np.concatenate(parts)


def decode(ids) -> str:
    """Text of byte-tokenizer `ids`; special ids are dropped, invalid UTF-8 is replaced."""
    data = bytes(int(i) for i in ids if 0 <= int(i) < 256)
    return data.decode("utf-8", errors="replace")


class Tokenizer(ABC):
    name: str
    """Human-readable identity, e.g. 'byte' or 'tokenizer.json (BPE, 32000 ids)'."""
    spec: str
    """What `load_tokenizer` rebuilds this tokenizer from (in another process)."""
    vocab_size: int
    """Number of ids: every id is in 0..vocab_size-1."""
    bos_id: int | None
    """Prepended to every document, or None."""
    eos_id: int | None
    """Appended to every document, or None."""
    pad_id: int
    """Id of padding tokens (they carry no target, so any valid id works)."""

    @abstractmethod
    def encode(self, text: str) -> np.ndarray:
        """(n,) int64 ids of `text`, without BOS/EOS."""

    @abstractmethod
    def decode(self, ids) -> str:
        """Text of `ids`; special tokens are dropped."""

    @abstractmethod
    def _identity(self) -> str:
        """Everything that decides the ids, as text (hashed into the fingerprint)."""

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    def encode_document(self, text: str) -> np.ndarray:
        """[BOS] + encode(text) + [EOS], leaving out the ones this tokenizer lacks."""
        return self.frame(self.encode(text))

    def frame(self, body: np.ndarray) -> np.ndarray:
        """(n,) ids -> int64 [BOS] + ids + [EOS] (without the specials this tokenizer lacks)."""
        parts = [np.array([i], dtype=np.int64) for i in (self.bos_id,) if i is not None]
        parts.append(body.astype(np.int64, copy=False))
        parts += [np.array([i], dtype=np.int64) for i in (self.eos_id,) if i is not None]
        return np.concatenate(parts)

    def describe(self) -> dict:
        """What prepared data and run directories record about this tokenizer (plain values)."""
        return {"name": self.name, "spec": self.spec, "fingerprint": self.fingerprint, "vocab_size": self.vocab_size,
                "bos_id": self.bos_id, "eos_id": self.eos_id, "pad_id": self.pad_id}

    @property
    def fingerprint(self) -> str:
        specials = f"bos={self.bos_id},eos={self.eos_id},vocab={self.vocab_size}"
        return hashlib.sha256(f"{self._identity()}\n{specials}".encode()).hexdigest()[:16]


class ByteTokenizer(Tokenizer):
    name = "byte"
    spec = "byte"
    vocab_size = VOCAB_SIZE
    bos_id = BOS
    eos_id = EOS
    pad_id = PAD
    mask_id = MASK

    def encode(self, text: str) -> np.ndarray:
        return encode(text, bos=False, eos=False)

    def decode(self, ids) -> str:
        return decode(ids)

    def _identity(self) -> str:
        return f"hsp byte tokenizer v1: utf-8 bytes 0-255, PAD={PAD} BOS={BOS} EOS={EOS} MASK={MASK}"


def load_tokenizer(spec: str = "") -> Tokenizer:
    """'' or 'byte': the byte tokenizer; otherwise a tokenizer.json file or a folder holding
    one (Hugging Face layout; BOS/EOS come from its tokenizer_config.json when present)."""
    if spec in ("", "byte"):
        return ByteTokenizer()
    from hsp.data.hf_tokenizer import HFTokenizer

    return HFTokenizer(spec)
