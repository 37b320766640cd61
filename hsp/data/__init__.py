"""Training data for hsp: tokenizers, prepared (memory-mapped) token files, datasets
addressed by index.

The driver only needs lengths; each worker rebuilds the same dataset from its
`DataSpec` and materialises the tokens of the indices it is given.
"""

from hsp.data.corpus import DataSpec, Dataset, SyntheticCorpus, open_dataset
from hsp.data.cursor import DataCursor
from hsp.data.prepare import prepare
from hsp.data.prepared import Manifest, PreparedDataset
from hsp.data.tokenizer import BOS, EOS, MASK, PAD, VOCAB_SIZE, ByteTokenizer, Tokenizer, decode, encode, load_tokenizer

__all__ = [
    "BOS",
    "EOS",
    "MASK",
    "PAD",
    "VOCAB_SIZE",
    "ByteTokenizer",
    "DataCursor",
    "DataSpec",
    "Dataset",
    "Manifest",
    "PreparedDataset",
    "SyntheticCorpus",
    "Tokenizer",
    "decode",
    "encode",
    "load_tokenizer",
    "open_dataset",
    "prepare",
]
