"""Sharded checkpoints of one rank's model and AdamW states (torch.distributed.checkpoint).

    save_states(model, optimizer, folder)   # collective: every rank writes its own shard file
    load_states(model, optimizer, folder)   # collective: reads the shards this rank needs
    read_model_tensors(folder)              # one process, no process group: the full weights

All ranks call these together. Each rank writes `__<rank>_0.distcp` holding its own
shards (a replicated tensor is written once, by rank 0), rank 0 writes the `.metadata`
index. Loading maps the saved shards onto the current layout, so a checkpoint written
by N ranks loads on M ranks, sharded or replicated (DCP resharding).

Only tensors are stored: the model's parameters and AdamW's per-parameter state (step,
exp_avg, exp_avg_sq), keyed by parameter name. Hyperparameters come from the config on
load (the learning rate is a function of the step). Nothing is unpickled freely: the
index goes through an allow-list unpickler of DCP's metadata classes, tensor data
through `torch.load(weights_only=True)`, and an entry that is not a tensor is refused.
"""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta, TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

METADATA_FILE = ".metadata"
"""The index rank 0 writes beside the shard files."""
MODEL_KEY = "model"
"""The top-level key of the model's parameters in a saved state (beside "optimizer")."""


class CheckpointLoadError(ValueError):
    """A sharded checkpoint could not be read (missing, truncated or foreign files)."""


def save_states(model: nn.Module, optimizer: torch.optim.Optimizer, folder: str | Path) -> None:
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {MODEL_KEY: model_state, "optimizer": optim_state["state"]}
    dcp.save(state, storage_writer=FileSystemWriter(str(folder), sync_files=True))


def load_states(model: nn.Module, optimizer: torch.optim.Optimizer, folder: str | Path) -> None:
    """Load `folder` into model and optimizer in place; raises CheckpointLoadError naming it."""
    optimizer.zero_grad(set_to_none=True)  # DCP creates AdamW's lazy states only without gradients
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {MODEL_KEY: model_state, "optimizer": optim_state["state"]}
    try:
        dcp.load(state, storage_reader=_SafeReader(str(folder)), planner=_TensorsOnly())
    except CheckpointException as err:  # raised alike on every rank (a BaseException)
        raise CheckpointLoadError(f"checkpoint {folder} could not be loaded: {_cause(err)}") from None
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError, EOFError) as err:
        raise CheckpointLoadError(f"checkpoint {folder} could not be loaded: {type(err).__name__}: {err}") from None
    set_state_dict(model, optimizer, model_state_dict=state[MODEL_KEY],
                   optim_state_dict={"state": state["optimizer"], "param_groups": optim_state["param_groups"]})


def read_model_tensors(folder: str | Path) -> dict[str, torch.Tensor]:
    """The full (unsharded) parameters of checkpoint `folder`, keyed by parameter name,
    assembled from every rank's shards in this one process (no process group needed);
    raises CheckpointLoadError naming the folder."""
    reader = _SafeReader(str(folder))
    prefix = f"{MODEL_KEY}."
    try:
        entries = reader.read_metadata().state_dict_metadata
        state = {fqn[len(prefix):]: torch.empty(meta.size, dtype=meta.properties.dtype)
                 for fqn, meta in entries.items() if fqn.startswith(prefix) and isinstance(meta, TensorStorageMetadata)}
        with warnings.catch_warnings():  # DCP warns that no process group is used: that is the intent here
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load({MODEL_KEY: state}, storage_reader=reader, planner=_TensorsOnly(), no_dist=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError, EOFError, CheckpointException) as err:
        raise CheckpointLoadError(f"checkpoint {folder} could not be loaded: {type(err).__name__}: {err}") from None
    if not state:
        raise CheckpointLoadError(f"checkpoint {folder} holds no model parameters")
    return state


def _cause(err: CheckpointException) -> str:
    """The lowest rank's error (the exception's own text is every rank's traceback)."""
    rank, (exc, _trace) = min(err.failures.items(), key=lambda item: item[0])
    return f"(rank {rank}) {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:400]


class _SafeReader(FileSystemReader):
    """FileSystemReader whose index is read by an allow-list unpickler (DCP's own uses pickle.load)."""

    def read_metadata(self, *args, **kwargs) -> Metadata:
        rank = kwargs.get("rank")
        name = METADATA_FILE if rank is None else f"__{rank}{METADATA_FILE}"
        with open(Path(self.path) / name, "rb") as f:
            metadata = _MetadataUnpickler(f).load()
        if not isinstance(metadata, Metadata):
            raise CheckpointLoadError(f"{Path(self.path) / name} is not a checkpoint index")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


_ALLOWED = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in ("Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
                 "ChunkStorageMetadata", "BytesStorageMetadata", "_MEM_FORMAT_ENCODING")
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),  # maps a layout's name back to torch.strided etc.
    ("torch", "Size"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("collections", "OrderedDict"),
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise CheckpointLoadError(f"checkpoint index refers to {module}.{name}, which a checkpoint index never holds")


class _TensorsOnly(DefaultLoadPlanner):
    """Reads tensors only: a pickled (non-tensor) entry would run code from the file."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        raise CheckpointLoadError(f"checkpoint entry {read_item.dest_index.fqn!r} is not a tensor; refusing to unpickle it")
