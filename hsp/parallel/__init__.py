"""Sequence parallelism: process-group catalogue, Ulysses all-to-alls and attention."""

from hsp.parallel.comm import CommTimer, heads_to_tokens, tokens_to_heads
from hsp.parallel.groups import GroupCatalogue, catalogue_ranges
from hsp.parallel.ulysses import UlyssesAttention

__all__ = ["CommTimer", "GroupCatalogue", "UlyssesAttention", "catalogue_ranges", "heads_to_tokens", "tokens_to_heads"]
