"""Training data for hsp: a byte-level tokenizer and datasets addressed by index.

The driver only needs lengths; each worker rebuilds the same dataset from its
`DataSpec` and materialises the tokens of the indices it is given.
"""

from hsp.data.corpus import DataSpec, Dataset, SyntheticCorpus, TextFolderCorpus, open_dataset
from hsp.data.cursor import DataCursor
from hsp.data.tokenizer import BOS, EOS, MASK, PAD, VOCAB_SIZE, decode, encode

__all__ = [
    "BOS",
    "EOS",
    "MASK",
    "PAD",
    "VOCAB_SIZE",
    "DataCursor",
    "DataSpec",
    "Dataset",
    "SyntheticCorpus",
    "TextFolderCorpus",
    "decode",
    "encode",
    "open_dataset",
]
