"""Memory a rank measures: peak memory of a step, and bytes autograd saves for backward.

- `reset_peak` / `peak_bytes`: the RSS high-water mark on CPU, the allocator peak on CUDA.
- `SavedBytesMeter` installs `torch.autograd.graph.saved_tensors_hooks` and tracks the
  bytes of distinct storages currently held by live graphs (a storage saved by several
  ops counts once; parameters' storages are excluded since they exist regardless). A
  storage stops counting when the last graph referencing it is freed (after backward, or
  when the graph is dropped), so `peak_bytes` is the high-water mark over the step.
  The activation budget of SFT and RL and `hsp profile`'s bytes per token use it.
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        # Linux: writing 5 resets the VmHWM (peak RSS) counter of this process
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # falls back to the lifetime peak below


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # kB on Linux


class _Handle:
    """What autograd stores instead of the tensor; releases the count when freed."""

    __slots__ = ("tensor", "meter", "key")

    def __init__(self, tensor: torch.Tensor, meter: "SavedBytesMeter", key: int | None):
        self.tensor, self.meter, self.key = tensor, meter, key

    def __del__(self) -> None:
        if self.key is not None:
            self.meter._release(self.key)


def _is_parameter(tensor: torch.Tensor) -> bool:
    return isinstance(tensor, nn.Parameter) or isinstance(tensor._base, nn.Parameter)


class SavedBytesMeter:
    """Context manager: live and peak saved-for-backward bytes of non-parameter storages."""

    def __init__(self, params: Iterable[torch.Tensor] = ()):
        self._skip = {p.untyped_storage().data_ptr() for p in params}
        self._refs: dict[int, int] = {}
        self._sizes: dict[int, int] = {}
        self.live_bytes = 0
        self.peak_bytes = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, tensor: torch.Tensor) -> _Handle:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in self._skip or storage.nbytes() == 0 or _is_parameter(tensor):
            return _Handle(tensor, self, None)
        if key not in self._refs:
            self._refs[key] = 0
            self._sizes[key] = storage.nbytes()
            self.live_bytes += storage.nbytes()
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        self._refs[key] += 1
        return _Handle(tensor, self, key)

    @staticmethod
    def _unpack(handle: _Handle) -> torch.Tensor:
        return handle.tensor

    def _release(self, key: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self.live_bytes -= self._sizes.pop(key)

    def __enter__(self) -> "SavedBytesMeter":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


def measure_saved_bytes(fn: Callable[[], torch.Tensor], params: Iterable[torch.Tensor]) -> int:
    """Peak saved bytes of building fn()'s graph (the graph is dropped, not backwarded)."""
    meter = SavedBytesMeter(params)
    with meter:
        loss = fn()
    peak = meter.peak_bytes
    del loss
    return peak
