"""Shared fixtures: offline environment, a session cache of tiny models, and a tiny recipe."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("SWANLAB_MODE", "disabled")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """Tiny models are built once per session into a private cache (the user's cache is left alone)."""
    if "MEMFACTORY_TEST_CACHE" in os.environ:
        os.environ["MEMFACTORY_CACHE"] = os.environ["MEMFACTORY_TEST_CACHE"]
    else:
        os.environ["MEMFACTORY_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return Path(os.environ["MEMFACTORY_CACHE"])


@pytest.fixture(scope="session")
def bpe_model_dir(model_cache):
    from memfactory_cli.models.aliases import tiny_qwen3_bpe

    return tiny_qwen3_bpe()


@pytest.fixture(scope="session")
def vllm_model_dir(model_cache):
    """tiny-qwen3 with 64-wide heads: vLLM's CPU attention refuses the other tiny models' 16 (tests/test_vllm.py)."""
    from memfactory_cli.models.aliases import tiny_qwen3_h64

    return tiny_qwen3_h64()


@pytest.fixture(scope="session")
def tokenizer(bpe_model_dir):
    from memfactory_cli.models.loading import load_tokenizer

    return load_tokenizer(str(bpe_model_dir))


@pytest.fixture()
def model(bpe_model_dir):
    from memfactory_cli.config.schema import ModelConfig
    from memfactory_cli.models.loading import load_model

    return load_model(ModelConfig(name_or_path=str(bpe_model_dir)), "cpu").eval()


def tiny_overrides(out: Path, **extra: str) -> list[str]:
    """Dot-overrides that turn the default recipe into a seconds-long CPU run on the BPE tiny model."""
    base = {
        "model.name_or_path": "tiny-qwen3-bpe",
        "agent.modules.memory.chunk_size": "48",
        "agent.modules.memory.max_memory_tokens": "8",
        "agent.modules.memory.max_chunks": "3",
        "agent.modules.memory.max_answer_tokens": "8",
        "agent.modules.memory.template": "compact",
        "data.synth.n_train": "16",
        "data.synth.n_eval": "4",
        "data.synth.filler_sentences": "4",
        "trainer.max_steps": "1",
        "trainer.questions_per_step": "2",
        "trainer.num_generations": "2",
        "trainer.device": "cpu",
        "trainer.bf16": "false",
        "logging.swanlab": "disabled",
        "logging.progress": "false",
        "output.dir": str(out),
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def run_cli(*args: str) -> int:
    """``memfactory ARGS`` in this process (faster than a subprocess); returns the exit code."""
    import sys

    from memfactory_cli.cli import main

    argv = sys.argv
    sys.argv = ["memfactory", *args]
    try:
        main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return 0


@pytest.fixture()
def fake_hub(tmp_path, monkeypatch, bpe_model_dir):
    """A Hugging Face cache holding the GPU recipes' models as config + the real Qwen3 tokenizer, no weights.

    Enough for ``memfactory check`` and the memory planner, which never load weights.
    """
    import json
    import shutil

    import huggingface_hub.constants

    configs = json.loads((ROOT / "tests" / "fixtures" / "qwen3_configs.json").read_text())
    hub = tmp_path / "hub"
    for model_id, config in configs.items():
        repo = hub / f"models--{model_id.replace('/', '--')}"
        snapshot = repo / "snapshots" / ("0" * 40)
        snapshot.mkdir(parents=True)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("0" * 40)
        (snapshot / "config.json").write_text(json.dumps(config))
        for f in Path(bpe_model_dir).iterdir():
            if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja"):
                shutil.copy(f, snapshot / f.name)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    return hub
