"""Where episodes come from: registered datasets, local files, or hub ids, all normalised to one row schema.

Canonical row (what environments consume): ``{"id", "question", "context", "answers": [str, ...]}``, plus
``answer_prefix`` for RULER items. Accepted inputs:

- MemAgent training parquet/JSON: ``prompt`` (chat list or str), ``context``, ``reward_model.ground_truth``;
- MemAgent eval JSON: ``context``, ``input``, ``answers``;
- RULER: ``context``, ``input``, ``outputs``, ``answer_prefix``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memfactory_cli.config.loader import build_dataclass
from memfactory_cli.config.schema import DataConfig
from memfactory_cli.data import dialogues, ruler, synth
from memfactory_cli.data.files import DATA_DIR, FILE_SUFFIXES, hub_offline, read_rows_file
from memfactory_cli.errors import UserError
from memfactory_cli.registry import register, registry

MEMAGENT_HUB = "BytedTsinghua-SIA/hotpotqa"
_FWE_NAME = re.compile(r"eval_fwe_(\d+)")
_MEMAGENT_NAME = re.compile(r"eval_(\d+)")


@register("dataset", "synth_train")
def synth_train(cfg: DataConfig) -> list[dict[str, Any]]:
    """Seeded synthetic training questions (MemAgent training schema)."""
    return synth.generate(build_dataclass(synth.SynthConfig, cfg.synth, "data.synth"), "train", cfg.seed)


@register("dataset", "synth_eval")
def synth_eval(cfg: DataConfig) -> list[dict[str, Any]]:
    """Held-out synthetic questions with unseen names (MemAgent eval schema)."""
    return [synth.to_eval_schema(x) for x in synth.generate(build_dataclass(synth.SynthConfig, cfg.synth, "data.synth"), "eval", cfg.seed)]


@register("dataset", "eval_50")
def eval_50(cfg: DataConfig) -> list[dict[str, Any]]:
    """MemAgent's RULER-HotpotQA, 50 documents (~7K tokens) per question, 128 questions (data/eval_50.json)."""
    return memagent_eval_rows("eval_50")


@register("dataset", "eval_100")
def eval_100(cfg: DataConfig) -> list[dict[str, Any]]:
    """MemAgent's RULER-HotpotQA, 100 documents (~14K tokens) per question, 128 questions (data/eval_100.json)."""
    return memagent_eval_rows("eval_100")


@register("dataset", "eval_fwe_16384")
def eval_fwe_16384(cfg: DataConfig, tokenizer: Any = None, limit: int | None = None) -> list[dict[str, Any]]:
    """RULER frequent-words extraction, 128 x 16,384 tokens, generated offline (seed 42) under the model's tokenizer."""
    return fwe_rows(16384, tokenizer, limit)


class NeedsTokenizer(UserError):
    """A set whose rows depend on the evaluated model's tokenizer was loaded without one."""


def memagent_eval_rows(name: str) -> list[dict[str, Any]]:
    """``data/<name>.json``, else the hub dataset's copy (cached or downloaded); offline and missing is one line."""
    filename = f"{name}.json"
    local = DATA_DIR / filename
    if local.is_file():
        return read_rows_file(local)
    hint = (
        f"put MemAgent's {filename} at {local} (on a connected machine: `hf download --repo-type dataset "
        f"{MEMAGENT_HUB} {filename} --local-dir {DATA_DIR}`) or pass --set path/to/{filename}"
    )
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(MEMAGENT_HUB, filename, repo_type="dataset")
    if isinstance(cached, str):
        return read_rows_file(Path(cached))
    if hub_offline():
        raise UserError(f"{name}: {local} not found and the hub is offline; {hint}")
    try:
        return read_rows_file(Path(hf_hub_download(MEMAGENT_HUB, filename, repo_type="dataset")))
    except UserError:
        raise
    except Exception as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{name}: {local} not found and the hub download failed ({reason}); {hint}") from None


def fwe_rows(length: int, tokenizer: Any = None, limit: int | None = None) -> list[dict[str, Any]]:
    """MemAgent's ``data/eval_fwe_<length>.json`` when present, else RULER's recipe regenerated under ``tokenizer``."""
    local = DATA_DIR / f"eval_fwe_{length}.json"
    if local.is_file():
        return read_rows_file(local)
    if tokenizer is None:
        raise NeedsTokenizer(
            f"eval_fwe_{length} is generated under the evaluated model's tokenizer: run it with `memfactory eval`, "
            f"or put MemAgent's eval_fwe_{length}.json at {local}"
        )
    return list(ruler.generate(ruler.FweSpec(length), ruler.token_counter(tokenizer), limit))


def set_source(name: str) -> str:
    """Where a named set's rows come from right now (for ``data list`` and ``summary.json``)."""
    if m := _FWE_NAME.fullmatch(name):
        local = DATA_DIR / f"{name}.json"
        return str(local) if local.is_file() else f"generated offline (RULER recipe, seed 42, {m.group(1)} tokens)"
    if _MEMAGENT_NAME.fullmatch(name):
        local = DATA_DIR / f"{name}.json"
        return str(local) if local.is_file() else f"missing: put {name}.json in {DATA_DIR}/ (or hub {MEMAGENT_HUB})"
    if name in registry("dataset"):
        return "generated offline (seeded)" if name.startswith("synth") else "registered"
    return name


def describe_sets() -> list[tuple[str, str, str]]:
    """(name, what, source) for every named set and name pattern, for ``memfactory data list``."""
    out = []
    for name in registry("dataset").names():
        doc = (inspect.getdoc(registry("dataset").get(name)) or "").splitlines()
        out.append((name, doc[0] if doc else "", set_source(name)))
    present = sorted(p.stem for p in DATA_DIR.glob("eval_*.json")) if DATA_DIR.is_dir() else []
    out.append(("eval_fwe_<len>", f"RULER frequent-words extraction at any length >= {ruler.MIN_LENGTH} tokens", "generated offline (seed 42)"))
    out.append(("eval_<N>", "any MemAgent RULER-HotpotQA eval_<N>.json with text contexts (N <= 10000)", f"in {DATA_DIR}/: {', '.join(present) or 'none'}"))
    out.append(("<path>", "any .json / .jsonl / .parquet file in a MemAgent, RULER or training schema", "the file"))
    return out


def _named_set(spec: str) -> Callable[..., list[dict[str, Any]]] | None:
    """A registered dataset, or one of the name patterns ``eval_fwe_<len>`` and ``eval_<N>``."""
    if spec in registry("dataset") or ":" in spec:
        return registry("dataset").get(spec)
    if m := _FWE_NAME.fullmatch(spec):
        length = int(m.group(1))
        return lambda cfg, tokenizer=None, limit=None: fwe_rows(length, tokenizer, limit)
    if _MEMAGENT_NAME.fullmatch(spec):
        return lambda cfg: memagent_eval_rows(spec)
    return None


def _call_dataset(fn: Callable[..., list[dict[str, Any]]], cfg: DataConfig, **hints: Any) -> list[dict[str, Any]]:
    """Pass a dataset function the hints (``tokenizer``, ``limit``) it declares; the others only take ``cfg``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    return fn(cfg, **{k: v for k, v in hints.items() if k in params})


def _as_answers(value: Any, where: str) -> list[str]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (str, int, float)):
        return [str(value)]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, int, float)) for v in value):
        return [str(v) for v in value]
    raise UserError(f"{where}: the reference answers must be a string or a non-empty list of strings")


def normalise_row(row: dict[str, Any], where: str, index: int) -> dict[str, Any]:
    """One input row (any accepted schema) -> the canonical episode row."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected an object, got {type(row).__name__}")
    if dialogues.is_dialogue_row(row):  # multi-session chats (RMM): LongMemEval, MSC, canonical
        return dialogues.convert(row, where, index)
    if "context" not in row:
        raise UserError(f"{where}: missing field 'context'")
    context = row["context"]
    if not isinstance(context, str):
        raise UserError(f"{where}: field 'context' must be text (document-index contexts are not supported)")
    if "input" in row:
        question = row["input"]
    elif "prompt" in row:
        prompt = row["prompt"]
        if hasattr(prompt, "tolist"):
            prompt = prompt.tolist()
        question = prompt[0]["content"] if isinstance(prompt, list) and prompt else prompt
    else:
        raise UserError(f"{where}: missing field 'input' (eval/RULER schema) or 'prompt' (training schema)")
    if not isinstance(question, str) or not question.strip():
        raise UserError(f"{where}: the question must be non-empty text")
    if "answers" in row:
        answers = _as_answers(row["answers"], where)
    elif "outputs" in row:
        answers = _as_answers(row["outputs"], where)
    elif isinstance(row.get("reward_model"), dict) and "ground_truth" in row["reward_model"]:
        answers = _as_answers(row["reward_model"]["ground_truth"], where)
    else:
        raise UserError(f"{where}: missing field 'answers', 'outputs' or 'reward_model.ground_truth'")
    extra = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
    out = {
        "id": str(row.get("index", extra.get("index", index))),
        "question": question,
        "context": context,
        "answers": answers,
    }
    if "answer_prefix" in row:
        out["answer_prefix"] = str(row["answer_prefix"])
    if isinstance(row.get("meta"), dict):  # agent-specific structure (e.g. a conversation), passed through as is
        out["meta"] = row["meta"]
    return out


def _read_hub(dataset_id: str) -> list[dict[str, Any]]:
    offline = hub_offline()
    hint = (
        f"download it on a connected machine (`hf download --repo-type dataset {dataset_id}`) and point the "
        "recipe at the local .json/.parquet file, e.g. under data/"
    )
    if offline:
        raise UserError(f"dataset '{dataset_id}' is a hub id but the hub is offline; {hint}")
    try:
        from datasets import load_dataset

        ds = load_dataset(dataset_id, split="train")
    except Exception as exc:
        raise UserError(f"cannot load hub dataset '{dataset_id}': {str(exc).splitlines()[0]}; {hint}") from None
    return list(ds)


def load_rows(spec: str, cfg: DataConfig, limit: int | None = None, tokenizer: Any = None) -> list[dict[str, Any]]:
    """Resolve ``spec`` (registered name or name pattern, file, or hub id) to canonical rows.

    ``tokenizer`` is the evaluated model's, for sets generated to a token length (``eval_fwe_<len>``).
    """
    if not spec:
        raise UserError("no dataset given")
    path = Path(spec).expanduser()
    named = _named_set(spec)
    if named is not None:
        raw, where = _call_dataset(named, cfg, tokenizer=tokenizer, limit=limit), spec
    elif path.suffix in FILE_SUFFIXES or path.exists():
        if not path.is_file():
            raise UserError(f"data file not found: {path}")
        raw, where = read_rows_file(path), str(path)
    elif spec.count("/") == 1 and not spec.startswith("."):
        raw, where = _read_hub(spec), spec
    else:
        raise UserError(
            f"dataset '{spec}' is not a registered name ({', '.join(registry('dataset').names())}), "
            "eval_fwe_<len>, eval_<N>, a .json/.jsonl/.parquet file, or a hub id"
        )
    if limit is not None:
        raw = raw[:limit]
    rows = [normalise_row(r, f"{where}: row {i}", i) for i, r in enumerate(raw)]
    if not rows:
        raise UserError(f"{where}: no rows")
    return rows


def load_split(data: Any, split: str) -> list[dict[str, Any]]:
    """The recipe's ``train`` or held-out ``eval`` rows: what every env's ``rows(split)`` serves."""
    if split == "train":
        return load_rows(data.train, data, data.train_limit)
    if split == "eval":
        if not data.eval:
            raise UserError("data.eval is not set; name a held-out set to evaluate")
        return load_rows(data.eval, data, data.eval_limit)
    raise ValueError(split)
