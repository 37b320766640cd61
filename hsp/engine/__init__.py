"""The rank runtime (no Ray): one `Rank` class hosting a step program.

- `rank`: join (backend choice), model and optimizer, checkpoint shards, group catalogue,
  collectives with error handling.
- `sft`: the supervised step of a StepPlan (`SupervisedSpec`, `SupervisedStep`).
- `state`: the model-state layout (FSDP2 zero3 or replicated), mixed precision,
  activation checkpointing, AdamW groups, the LR schedule, bytes held.
- `dcp`: sharded checkpoints of a rank's model and optimizer (torch.distributed.checkpoint).
- `flops`: model FLOPs of a step and the measured peak (MFU).
- `config`: WorkerConfig (the SFT rank's config) and the step reports.
- `memory`: peak memory and saved-for-backward bytes.
- `spawn`: N local processes, one rank each (`hsp profile`, the tests' run_ranks).
- `profile`: `hsp profile`.
"""

from hsp.engine.config import MicroBatchReport, StepReport, WorkerConfig
from hsp.engine.rank import CollectiveError, JoinOptions, Rank, build_model
from hsp.engine.sft import SupervisedSpec, SupervisedStep

__all__ = [
    "CollectiveError",
    "JoinOptions",
    "MicroBatchReport",
    "Rank",
    "StepReport",
    "SupervisedSpec",
    "SupervisedStep",
    "WorkerConfig",
    "build_model",
]
