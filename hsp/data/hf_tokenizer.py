"""A local Hugging Face `tokenizer.json` behind hsp's `Tokenizer` interface.

`tokenizer.json` holds the whole pipeline (normaliser, pre-tokeniser, model, added
tokens) but not which token is BOS/EOS/PAD; those come from `tokenizer_config.json`
beside it (`bos_token`, `eos_token`, `pad_token`, as strings or {"content": ...}). A
tokenizer without them frames documents with nothing, which prepared data records.
Documents are encoded without the post-processor's specials (add_special_tokens=False);
`Tokenizer.frame` adds BOS/EOS itself, the same way for every tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer as _Backend

from hsp.data.tokenizer import Tokenizer

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"


def _resolve(spec: str) -> Path:
    path = Path(spec)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise ValueError(
            f"tokenizer {spec!r}: no such file (or folder with {TOKENIZER_FILE}); pass a tokenizer.json, its folder, "
            "or 'byte' for the built-in byte tokenizer"
        )
    return path


def _special(config: dict, key: str) -> str | None:
    value = config.get(key)
    return value.get("content") if isinstance(value, dict) else value


class HFTokenizer(Tokenizer):
    def __init__(self, spec: str):
        path = _resolve(spec)
        try:
            self._backend = _Backend.from_file(str(path))
        except Exception as err:  # the library raises a plain Exception for malformed files
            raise ValueError(f"tokenizer {str(path)!r} cannot be read by the tokenizers library: {err}") from None
        self.spec = str(path.resolve())
        self.vocab_size = self._backend.get_vocab_size(with_added_tokens=True)
        config_file = path.parent / CONFIG_FILE
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        self.bos_id = self._token_id(config, "bos_token", config_file)
        self.eos_id = self._token_id(config, "eos_token", config_file)
        pad = self._token_id(config, "pad_token", config_file)
        self.pad_id = next((i for i in (pad, self.eos_id) if i is not None), 0)
        kind = json.loads(self._backend.to_str())["model"]["type"]
        self.name = f"{path.name} ({kind}, {self.vocab_size} ids)"

    def _token_id(self, config: dict, key: str, config_file: Path) -> int | None:
        token = _special(config, key)
        if token is None:
            return None
        token_id = self._backend.token_to_id(token)
        if token_id is None:
            raise ValueError(f"{config_file}: {key}={token!r} is not in the vocabulary of {TOKENIZER_FILE}")
        return token_id

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._backend.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        encodings = self._backend.encode_batch_fast(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]

    def decode(self, ids) -> str:
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=True)

    def _identity(self) -> str:
        # canonical JSON: the same tokenizer re-saved with other formatting keeps its fingerprint
        return json.dumps(json.loads(self._backend.to_str()), sort_keys=True)
