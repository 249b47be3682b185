"""Peak memory of the trainer's per-token log-probs against the naive full-logits version, on a 32k-vocabulary model.

Model: random Qwen3, vocabulary 32,768, hidden 256, 2 layers (depth does not matter here: the LM head does), fp32.
Batch: 4 rows x (768 prompt + 256 completion) tokens, log-probs of the 256 completion tokens of every row.

- ours:  what ``MemGRPOTrainer`` runs: TRL's ``_get_per_token_logps_and_entropies`` with the fused LM head TRL
  installs (``add_fused_lm_head``: tiles of at most 4,096 tokens x 32,768 vocabulary entries folded into fp32
  logsumexp statistics), plus memfactory's ``score_only_completion_positions`` (only completion positions are
  projected) and ``lean_cpu_logprob_tiles`` (4,096-wide vocabulary tiles on CPU, where TRL's torch fallback makes
  several fp32 copies of a tile).
- naive: ``model(ids).logits`` (B x L x V fp32), ``log_softmax``, ``gather``.

Two passes each: ``no_grad`` (old/reference log-probs) and forward + backward of their sum (the policy loss).

How it is measured: each (variant, pass) runs in a fresh process with ``MALLOC_MMAP_THRESHOLD_`` set, so every large
tensor is its own mmap and is returned to the OS when freed (RSS follows live tensors, no allocator cache). The
kernel's peak-RSS mark is reset (``/proc/self/clear_refs`` = 5) right before the call; the figure is peak RSS
(``VmHWM``) minus RSS before the call. tracemalloc would not see torch's CPU allocations, hence RSS.
Last line: ``ratio=X`` = max over both passes of peak(ours) / peak(naive); goal <= 0.5.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import _common  # noqa: F401  (sets the offline environment)

VOCAB, HIDDEN, LAYERS, ROWS, PROMPT, COMPLETION = 32768, 256, 2, 4, 768, 256


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _model():
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, tie_word_embeddings=True,
    )  # fmt: skip
    return Qwen3ForCausalLM(config).float()


def _ours(model):
    from trl import GRPOTrainer
    from trl.trainer.utils import add_fused_lm_head

    from memfactory_cli.trainer.trl_patches import lean_cpu_logprob_tiles, score_only_completion_positions

    add_fused_lm_head(model)  # what GRPOTrainer.__init__ does to the policy; then what MemGRPOTrainer adds
    score_only_completion_positions()
    lean_cpu_logprob_tiles(model.device)
    host = SimpleNamespace(accelerator=SimpleNamespace(autocast=nullcontext, is_main_process=True))

    def logps(ids, mask):
        return GRPOTrainer._get_per_token_logps_and_entropies(host, model, ids, mask, COMPLETION)[0]

    return logps


def _naive(model):
    import torch

    def logps(ids, mask):
        logits = model(input_ids=ids, attention_mask=mask).logits[:, -COMPLETION - 1 : -1].float()
        return torch.log_softmax(logits, dim=-1).gather(-1, ids[:, -COMPLETION:, None]).squeeze(-1)

    return logps


def child(variant: str, mode: str) -> None:
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = _model()
    logps = (_ours if variant == "ours" else _naive)(model)
    ids = torch.randint(0, VOCAB, (ROWS, PROMPT + COMPLETION), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    reference = None
    if mode == "check":  # both variants must compute the same numbers
        with torch.no_grad():
            reference = _naive(_model())(ids, mask)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    if mode == "train":
        logps(ids, mask).sum().backward()
    else:
        with torch.no_grad():
            out = logps(ids, mask)
        if reference is not None:
            print(f"max_abs_diff={float((out - reference).abs().max()):.2e}")
    print(f"peak_mib={(_status_kib('VmHWM') - before) / 1024:.1f}")


def measure(variant: str, mode: str) -> tuple[float, list[str]]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(
        [sys.executable, __file__, "--child", variant, mode], capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    lines = result.stdout.split()
    return float(lines[-1].split("=")[1]), lines[:-1]


def main() -> None:
    print(f"vocab {VOCAB}, {ROWS} rows x ({PROMPT} + {COMPLETION}) tokens; full fp32 logits = "
          f"{ROWS * (PROMPT + COMPLETION) * VOCAB * 4 / 2**20:.0f} MiB")  # fmt: skip
    _, check = measure("ours", "check")
    print(f"ours vs naive log-probs: {check[0]}")
    ratios = []
    for mode in ("no_grad", "train"):
        ours, _ = measure("ours", mode)
        naive, _ = measure("naive", mode)
        ratios.append(ours / naive)
        print(f"{mode:8s} peak above baseline: ours {ours:7.1f} MiB   naive {naive:7.1f} MiB   ratio {ours / naive:.3f}")
    print("goal: ratio <= 0.5")
    print(f"ratio={max(ratios):.3f}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
