"""The memory planner's KV-cache and activation estimates against the bytes a tiny Qwen3 actually holds, on CPU.

Shapes: the 1.7B MemAgent recipe's (``recipes/memagent_qwen3_1.7b.yaml``): its widest row (update-turn prompt at its
budgets plus the memory budget: about 4.7k tokens), with ``--rows`` rows per micro-batch (2 by default; every
figure is linear in rows except the attention mask, which is rows x width^2 either way). Model: a random Qwen3
with hidden 64, MLP 192, 4 query / 2 KV heads of 32, 2 layers (the per-token formulas are checked, not the size).

Measured, per precision mode (fp32 weights under bf16 autocast, as the recipes train; bf16 weights; fp32):

- **KV cache**: the bytes of every key and value tensor of the cache a prefill of the generate shape (prompt +
  new tokens) leaves, against ``models.footprint.kv_bytes_per_token`` x positions (the helper bounded generation
  uses).
- **saved activations**: every distinct tensor storage autograd saves during the forward of the decoder (saved-tensor
  hooks; parameters excluded; autocast's half weight copies reported separately), against the planner's
  ``layers x layer_activation_bytes x tokens + mask`` (gradient checkpointing off).
  The per-token tensors alone (masks left out) are reported too: at this tiny hidden size the masks dominate.
- **checkpointed**: what stays saved with gradient checkpointing: the inputs each checkpointed layer keeps (layer
  pre-hooks) plus the largest single layer's saved set (what its recompute holds), against the planner's
  ``layers x residual x hidden x tokens + one layer``.

Last line: ``ratio=X`` = the worst estimate/measured ratio (max of ratio and 1/ratio); goal <= 1.15.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _common  # noqa: E402,F401  (offline env)
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def recipe_shapes() -> tuple[int, int]:
    """(prompt tokens, completion tokens) of the 1.7B recipe's widest row, with the real Qwen3 tokenizer."""
    from memfactory_cli.config import load_recipe
    from memfactory_cli.models.aliases import tiny_qwen3_bpe
    from memfactory_cli.models.loading import load_tokenizer
    from memfactory_cli.workflows.common import build_agent

    cfg = load_recipe(str(ROOT / "recipes" / "memagent_qwen3_1.7b.yaml"), [])
    agent = build_agent(cfg, load_tokenizer(str(tiny_qwen3_bpe())))
    return max(agent.row_shapes(question_tokens=40).values(), key=sum)


def tiny_qwen3(dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, Qwen3Config

    config = Qwen3Config(
        vocab_size=2048, hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, tie_word_embeddings=True, max_position_embeddings=8192,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(dtype)
    return model


def kv_held(model, rows: int, width: int, autocast: bool) -> int:
    ids = torch.randint(10, 2000, (rows, width))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        cache = model(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


def saved_by_autograd(model, ids, mask, autocast: bool, checkpointing: bool) -> dict[str, int]:
    """Distinct saved storages of a training forward of the decoder, by kind; layer inputs with checkpointing."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    weight_shapes = {tuple(p.shape) for p in model.parameters()} | {tuple(p.shape[::-1]) for p in model.parameters()}
    seen: dict[int, tuple[str, int]] = {}
    per_layer: list[int] = []
    inputs: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params and ptr not in seen:
            kind = "weight copy" if tuple(t.shape) in weight_shapes and t.dim() == 2 else "activation"
            if t.dim() == 4 and t.size(-1) == t.size(-2) == ids.size(1):
                kind = "mask"
            seen[ptr] = (kind, t.untyped_storage().nbytes())
        return t

    def layer_input(module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        inputs[hidden.untyped_storage().data_ptr()] = hidden.untyped_storage().nbytes()
        per_layer.append(sum(n for k, n in seen.values() if k == "activation"))

    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    hooks = [layer.register_forward_pre_hook(layer_input, with_kwargs=True) for layer in model.model.layers]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    finally:
        for h in hooks:
            h.remove()
        model.gradient_checkpointing_disable()
    per_layer.append(sum(n for k, n in seen.values() if k == "activation"))
    layers = [b - a for a, b in zip(per_layer, per_layer[1:])]
    kinds: dict[str, int] = {}
    for kind, n in seen.values():
        kinds[kind] = kinds.get(kind, 0) + n
    kinds["layer inputs"] = sum(inputs.values())
    kinds["largest layer"] = max(layers)
    del out
    return kinds


def main() -> None:
    from memfactory_cli.models.footprint import kv_bytes_per_token
    from memfactory_cli.workflows.planner import layer_activation_bytes

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2)
    args = parser.parse_args()
    prompt, completion = recipe_shapes()
    width = prompt + completion
    rows, tokens = args.rows, args.rows * width
    print(f"shape: {rows} rows x ({prompt} prompt + {completion} completion) = {tokens} tokens per micro-batch")
    ratios: list[float] = []

    def report(name: str, estimate: float, measured: float) -> None:
        r = estimate / measured
        ratios.append(max(r, 1 / r))
        print(f"  {name:<34} estimate {estimate / 2**20:9.1f} MiB  measured {measured / 2**20:9.1f} MiB  ratio {r:.3f}")

    for label, weights, autocast in (("fp32 weights + bf16 autocast", torch.float32, True), ("bf16 weights", torch.bfloat16, False), ("fp32", torch.float32, False)):
        model = tiny_qwen3(weights)
        c = model.config
        compute = torch.bfloat16 if autocast else weights
        cb, wb = torch.empty((), dtype=compute).element_size(), torch.empty((), dtype=weights).element_size()
        residual = wb if autocast else cb
        print(label)
        report("KV cache (prefill of the shape)", rows * width * kv_bytes_per_token(c, weights, compute), kv_held(model, rows, width, autocast))
        ids = torch.randint(10, 2000, (rows, width))
        mask = torch.ones_like(ids)
        mask[0, : width // 3] = 0  # left padding, as in a micro-batch of unequal rows
        full = saved_by_autograd(model, ids, mask, autocast, checkpointing=False)
        mask_bytes = rows * width * width * cb  # SDPA keeps a padding mask per layer in the compute dtype
        per_layer = layer_activation_bytes(c, cb, residual, "sdpa") * tokens
        layers = c.num_hidden_layers
        report("saved activations (no checkpointing)", layers * (per_layer + mask_bytes), full["activation"] + full.get("mask", 0))
        report("  of which per-token tensors (no masks)", layers * per_layer, full["activation"])
        ckpt = saved_by_autograd(model, ids, mask, autocast, checkpointing=True)
        report(
            "checkpointed (layer inputs + 1 layer)",
            layers * residual * c.hidden_size * tokens + per_layer + mask_bytes,
            ckpt["layer inputs"] + full["largest layer"] + full.get("mask", 0) / layers,
        )
        if full.get("weight copy"):
            print(f"  autocast weight copies: {full['weight copy'] / 2**20:.2f} MiB (planner: linear weights x {cb} B)")
        del model
    print(f"ratio={max(ratios):.3f}")


if __name__ == "__main__":
    main()
