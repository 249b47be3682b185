"""``memfactory`` under accelerate's FSDP2 plugin on CPU processes: the launched script of tests/test_sharded.py.

accelerate turns an FSDP config into FSDP only on accelerators (``AcceleratorState`` promotes MULTI_GPU and kin,
never MULTI_CPU), so ``accelerate launch --config_file fsdp2.yaml`` on CPU silently trains plain DDP. torch's
``fully_shard`` itself runs over gloo (../shared/reference/fsdp_cpu.md), so this shim makes exactly that one promotion
and nothing else: the Accelerator, transformers' Trainer and TRL then take their FSDP2 paths as on GPUs (TRL's
``prepare_fsdp`` for the reference model, per-layer ``fully_shard``, sharded optimizer, FSDP checkpoint files).
What differs from GPUs: gloo instead of nccl, fp32 instead of bf16 mixed precision.

``MF_TEST_KILL_BEFORE_RENAME=checkpoint-N`` SIGKILLs rank 0 once checkpoint N is fully written to its staging
folder, just before the rename that publishes it (the torchrun agent then stops the other rank).
"""

import os
import signal

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_init = AcceleratorState.__init__


def _init_with_fsdp_on_cpu(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    if self.distributed_type == DistributedType.MULTI_CPU and kwargs.get("fsdp_plugin") is not None:
        # AcceleratorState copies PartialState's fields on every construction: promote both.
        self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.fsdp_plugin = kwargs["fsdp_plugin"]


AcceleratorState.__init__ = _init_with_fsdp_on_cpu


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
