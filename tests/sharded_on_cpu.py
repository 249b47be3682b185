"""``memfactory`` under accelerate's FSDP2 or DeepSpeed plugin on CPU processes: the launched script of
tests/test_sharded.py.

accelerate turns an FSDP or DeepSpeed config into FSDP / DEEPSPEED only on accelerators (``AcceleratorState``
promotes MULTI_GPU and kin, never MULTI_CPU, and skips DeepSpeed when ``cpu=True``), so ``accelerate launch
--config_file fsdp2.yaml`` on CPU silently trains plain DDP. torch's ``fully_shard`` runs over gloo
(../shared/reference/fsdp_cpu.md), and so does DeepSpeed's CPU accelerator when oneCCL is not installed. This shim
makes exactly that promotion, and for DeepSpeed wraps the existing gloo process group in ``deepspeed.comm`` (accelerate
does that for GPUs in ``PartialState``); nothing else changes. The Accelerator, transformers' Trainer and TRL then take
their sharded paths as on GPUs (TRL's ``prepare_fsdp`` / ``prepare_deepspeed`` for the reference model, per-layer
``fully_shard`` or ZeRO-3 partitioning, sharded optimizer, sharded checkpoint files). What differs from GPUs: gloo
instead of nccl, fp32 instead of bf16 mixed precision.

``MF_TEST_KILL_BEFORE_RENAME=checkpoint-N`` SIGKILLs rank 0 once checkpoint N is fully written to its staging
folder, just before the rename that publishes it (the torchrun agent then stops the other rank).
"""

import os
import signal

os.environ.setdefault("DS_ACCELERATOR", "cpu")

from accelerate.state import AcceleratorState, PartialState  # noqa: E402
from accelerate.utils import DistributedType  # noqa: E402

_state_init = AcceleratorState.__init__
_partial_init = PartialState.__init__


def _promote(self, kind: DistributedType) -> None:
    # AcceleratorState copies PartialState's fields on every construction: promote both.
    self.distributed_type = PartialState._shared_state["distributed_type"] = kind


def _state_init_sharded_on_cpu(self, *args, **kwargs):
    _state_init(self, *args, **kwargs)
    if self.distributed_type != DistributedType.MULTI_CPU:
        return
    if kwargs.get("fsdp_plugin") is not None:
        _promote(self, DistributedType.FSDP)
        self.fsdp_plugin = kwargs["fsdp_plugin"]
    elif kwargs.get("deepspeed_plugin") is not None:
        plugin = kwargs["deepspeed_plugin"]
        _promote(self, DistributedType.DEEPSPEED)
        plugin.set_mixed_precision(self._mixed_precision)
        plugin.select(_from_accelerator_state=True)
        self.deepspeed_plugins = plugin


def _partial_init_with_deepspeed_comm(self, *args, **kwargs):
    _partial_init(self, *args, **kwargs)
    import torch.distributed

    if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true" and torch.distributed.is_initialized():
        from deepspeed import comm

        if not comm.is_initialized():  # TRL loads the reference model under zero.Init before the Accelerator exists
            comm.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)


AcceleratorState.__init__ = _state_init_sharded_on_cpu
PartialState.__init__ = _partial_init_with_deepspeed_comm


def _kill_before_rename(name: str) -> None:
    import memfactory_cli.trainer.grpo as grpo

    rename = grpo.replace_dir

    def killing_rename(src, dst):
        if dst.name == name:
            os.kill(os.getpid(), signal.SIGKILL)
        rename(src, dst)

    grpo.replace_dir = killing_rename


if __name__ == "__main__":
    if os.environ.get("MF_TEST_KILL_BEFORE_RENAME"):
        _kill_before_rename(os.environ["MF_TEST_KILL_BEFORE_RENAME"])
    from memfactory_cli.cli import main

    main()
