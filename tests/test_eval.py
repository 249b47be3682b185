"""`memfactory eval` and its pieces: scoring and avg@k by hand, the RULER fwe generator, named sets, resumable
results, the summaries and the HTML memory-trace viewer."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from memfactory_cli.config.schema import DataConfig
from memfactory_cli.data import ruler
from memfactory_cli.data.sources import load_rows
from memfactory_cli.envs.longcontext import LongcontextEnv
from memfactory_cli.errors import UserError
from memfactory_cli.report import comparison, diff_html, trace_html
from memfactory_cli.workflows.evaluate import mean_stderr, summarise
from tests.conftest import ROOT, tiny_overrides

RECIPE = str(ROOT / "recipes" / "memagent_tiny_cpu.yaml")


# Tiny models run fastest on one thread, and a busy machine then slows them least.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture()
def one_thread():
    """In-process evals on one torch thread, as the subprocesses run (and restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def memfactory(*args, cwd=ROOT, timeout=300):
    return subprocess.run([sys.executable, "-m", "memfactory_cli", *args], cwd=cwd, capture_output=True, text=True, env=ENV, timeout=timeout)


# ---------------------------------------------------------------- scoring and avg@k, hand-computed


def test_env_scores_qa_answers_by_hand():
    env = LongcontextEnv(DataConfig())
    metrics = env.metric_names([{"answers": ["x"]}])
    assert metrics == ("em", "sub_em", "f1")
    # boxed "The Cat sat on the mat." -> "cat sat on mat" (4 tokens) vs "cat on mat" (3): P=3/4, R=1, F1=6/7
    s = env.score("so \\boxed{The Cat sat on the mat.}", ["a cat on the mat"], metrics)
    assert s["em"] == 0.0 and s["sub_em"] == 0.0 and s["f1"] == pytest.approx(6 / 7)
    s = env.score("\\boxed{Oslo, Norway}", ["Bergen", "oslo"], metrics)
    assert s == {"em": 0.0, "sub_em": 1.0, "f1": pytest.approx(2 / 3)}  # 1 of 2 predicted tokens, all of 1 gold
    s = env.score("\\boxed{yes}", ["no"], metrics)
    assert s == {"em": 0.0, "sub_em": 0.0, "f1": 0.0}
    assert env.score("Oslo, no box", ["oslo"], metrics) == {"em": 0.0, "sub_em": 0.0, "f1": 0.0}


def test_env_scores_ruler_answers_by_hand():
    env = LongcontextEnv(DataConfig())
    metrics = env.metric_names([{"answers": ["a"], "answer_prefix": "Answer:"}])
    assert metrics == ("string_match_all",)
    refs = ["qwerty", "asdfgh", "zxcvbn"]
    # unboxed RULER replies are scored whole: 2 of the 3 words appear (case-insensitively)
    assert env.score("QWERTY, zxcvbn and more", refs, metrics)["string_match_all"] == pytest.approx(2 / 3)
    assert env.score("\\boxed{asdfgh}", refs, metrics)["string_match_all"] == pytest.approx(1 / 3)


def test_avg_at_k_is_mean_over_questions_of_mean_over_samples():
    # q0: 1, 0 -> .5; q1: 1, 1 -> 1; q2: 0, 0 -> 0; a third sample (k=2 asked) and a q3 (n=3 asked) are ignored
    records = [
        {"q": q, "sample": s, "scores": {"em": v}}
        for q, s, v in [(0, 0, 1.0), (0, 1, 0.0), (1, 0, 1.0), (1, 1, 1.0), (2, 0, 0.0), (2, 1, 0.0), (0, 2, 1.0), (3, 0, 1.0)]
    ]
    per_question, summary = summarise(records, ("em",), n=3, k=2)
    assert per_question == [{"em": 0.5}, {"em": 1.0}, {"em": 0.0}]
    # sample variance of (.5, 1, 0) = .25; stderr = sqrt(.25 / 3)
    assert summary["em"]["mean"] == pytest.approx(0.5) and summary["em"]["stderr"] == pytest.approx(math.sqrt(0.25 / 3))


def test_scores_without_a_verdict_are_left_out_not_zero():
    records = [{"q": 0, "sample": 0, "scores": {"judge": None}}, {"q": 0, "sample": 1, "scores": {"judge": 1.0}}]
    records += [{"q": 1, "sample": s, "scores": {"judge": None}} for s in (0, 1)]
    _, summary = summarise(records, ("judge",), n=2, k=2)
    assert summary["judge"] == mean_stderr([1.0])


# ---------------------------------------------------------------- RULER frequent-words extraction


def _count_tokens(tokenizer):
    return ruler.token_counter(tokenizer)


def test_fwe_is_deterministic_per_seed_and_a_limit_is_a_prefix(tokenizer):
    count = _count_tokens(tokenizer)
    spec = ruler.FweSpec(1024)
    first = list(ruler.generate(spec, count, limit=3))
    assert first == list(ruler.generate(spec, count, limit=3))
    assert first[:2] == list(ruler.generate(spec, count, limit=2))
    other = list(ruler.generate(ruler.FweSpec(1024, seed=7), count, limit=3))
    assert [x["outputs"] for x in other] != [x["outputs"] for x in first]
    assert len({tuple(x["outputs"]) for x in first}) == 3  # every sample draws its own vocabulary


def _exact_word_count(word_counts: list[int], vocab_size: int) -> int | None:
    """The W whose RULER counts floor(W k^-2 / zeta(2)) (zeros dropped) are exactly these, if any."""
    total = sum(word_counts)
    for w in range(total, int(total * 1.2) + 2):
        if [c for c in ruler.counts(w, vocab_size, 2.0) if c] == word_counts:
            return w
    return None


@pytest.mark.parametrize("length", [1024, 2048])
def test_fwe_hits_the_length_and_reproduces_rulers_statistics(tokenizer, length):
    count = _count_tokens(tokenizer)
    items = list(ruler.generate(ruler.FweSpec(length), count, limit=3))
    for item in items:
        tokens = count(item["context"])
        assert 0.98 * length <= tokens <= length, tokens
        assert item["length"] == tokens + 50
        words = item["context"].split(" ")
        ranked = Counter(words).most_common()
        assert ranked[0][0] == "..."  # rank 1 is the noise token
        assert [w for w, _ in ranked[1:4]] == item["outputs"]  # the answer: ranks 2-4
        assert ranked[3][1] > ranked[4][1]  # and strictly ahead of rank 5
        assert all(len(w) == 6 and w.isalpha() and w.islower() for w, _ in ranked[1:])
        assert len(ranked) <= length // 50
        assert _exact_word_count([c for _, c in ranked], length // 50) is not None  # zipf alpha=2 counts, exactly


def test_fwe_16384_under_the_qwen3_tokenizer_is_within_two_percent():
    from transformers import AutoTokenizer

    from memfactory_cli.models.aliases import qwen3_tokenizer_dir

    count = _count_tokens(AutoTokenizer.from_pretrained(str(qwen3_tokenizer_dir())))
    (item,) = ruler.generate(ruler.FweSpec(16384), count, limit=1)
    assert 0.98 * 16384 <= count(item["context"]) <= 16384
    words = Counter(item["context"].split(" "))
    assert 7000 < sum(words.values()) < 10000 and words["..."] > 4000  # reference: ~7,850 words, "..." ~4,772


def test_zeta_matches_known_values():
    assert ruler.zeta(2.0) == pytest.approx(math.pi**2 / 6, rel=1e-15)
    assert ruler.zeta(4.0) == pytest.approx(math.pi**4 / 90, rel=1e-12)
    assert ruler.zeta(1.5) == pytest.approx(2.612375348685488, rel=1e-10)


def test_named_fwe_sets_load_as_ruler_rows(tokenizer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = load_rows("eval_fwe_1024", DataConfig(), limit=2, tokenizer=tokenizer)
    assert len(rows) == 2 and rows[0]["answer_prefix"].startswith("Answer:") and len(rows[0]["answers"]) == 3
    assert LongcontextEnv.metric_names(rows) == ("string_match_all",)
    assert load_rows("eval_fwe_16384", DataConfig(), limit=1, tokenizer=tokenizer)[0]["id"] == "0"
    with pytest.raises(UserError, match="evaluated model's tokenizer"):
        load_rows("eval_fwe_1024", DataConfig())
    with pytest.raises(UserError, match="at least 512"):
        load_rows("eval_fwe_100", DataConfig(), tokenizer=tokenizer)


def test_memagent_files_load_from_data_and_are_one_clear_line_when_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as info:
        load_rows("eval_50", DataConfig())
    message = str(info.value)
    assert "\n" not in message and "data/eval_50.json" in message and "hf download" in message
    (tmp_path / "data").mkdir()
    items = [{"context": "Doc one.", "input": f"Q{i}?", "answers": ["a"], "num_docs": 50, "index": i} for i in range(3)]
    (tmp_path / "data" / "eval_50.json").write_text(json.dumps(items))
    assert [r["question"] for r in load_rows("eval_50", DataConfig(), limit=2)] == ["Q0?", "Q1?"]
    (tmp_path / "data" / "eval_fwe_4096.json").write_text(json.dumps([{**items[0], "outputs": ["x", "y", "z"], "answer_prefix": "A:"}]))
    assert load_rows("eval_fwe_4096", DataConfig())[0]["answers"] == ["a"]  # MemAgent's own file wins


# ---------------------------------------------------------------- resumable eval


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _keys(rows: list[dict]) -> set[tuple]:
    return {(r["set"], r["model"], r["q"], r["sample"]) for r in rows}


def test_an_interrupted_eval_resumes_to_exactly_n_times_k_rows(one_thread, tmp_path, monkeypatch):
    from memfactory_cli.generation.base import HFGenerator
    from memfactory_cli.workflows import eval_sets

    out = tmp_path / "eval"
    overrides = tiny_overrides(tmp_path / "unused", **{"eval.questions_per_rollout": "1"})
    real_generate, calls = HFGenerator.generate, {"n": 0}

    def dying_generate(self, prompts, max_new_tokens):
        calls["n"] += 1
        if calls["n"] == 5:  # part-way through the second question's batch
            raise KeyboardInterrupt
        return real_generate(self, prompts, max_new_tokens)

    monkeypatch.setattr(HFGenerator, "generate", dying_generate)
    with pytest.raises(KeyboardInterrupt):
        eval_sets.run(["synth_eval"], None, overrides, k=2, out=str(out), progress=lambda *a: None)
    results = out / "results.jsonl"
    partial = _rows(results)
    assert 0 < len(partial) < 8
    with open(results, "a") as f:  # a kill in the middle of a write leaves a torn line
        f.write('{"set": "synth_eval", "model": "tiny-qwen3-bpe", "q": 3, "sam')
    monkeypatch.setattr(HFGenerator, "generate", real_generate)
    entries = eval_sets.run(["synth_eval"], None, overrides, k=2, out=str(out), progress=lambda *a: None)
    rows = _rows(results)
    assert len(rows) == 8 and len(_keys(rows)) == 8  # n x k, no duplicate, none lost
    assert [r for r in rows[: len(partial)]] == partial  # the rows done before the kill were kept, not redone
    (entry,) = json.loads((out / "summary.json").read_text())
    assert entry["n"] == 4 and entry["k"] == 2 and entry == entries[0]
    # a finished eval re-run rolls out nothing and changes nothing
    eval_sets.run(["synth_eval"], None, overrides, k=2, out=str(out), progress=lambda *a: None)
    assert _rows(results) == rows


def test_a_killed_eval_process_resumes_to_exactly_n_times_k_rows(tmp_path):
    out = tmp_path / "eval"
    args = ["eval", "--set", "synth_eval", "--k", "2", "--out", str(out), *tiny_overrides(tmp_path / "x", **{"eval.questions_per_rollout": "1", "data.synth.n_eval": "12"})]
    proc = subprocess.Popen([sys.executable, "-m", "memfactory_cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 120
    try:
        while not (results.exists() and results.read_text().count("\n") >= 2):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no rows appeared"
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
    before = results.read_text().count("\n")
    assert before < 24, "the eval finished before it was killed"
    result = memfactory(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = _rows(results)
    assert len(rows) == 24 and len(_keys(rows)) == 24


def test_results_from_other_settings_are_not_mixed_in(one_thread, tmp_path):
    from memfactory_cli.workflows import eval_sets

    out = tmp_path / "eval"
    overrides = tiny_overrides(tmp_path / "x", **{"data.synth.n_eval": "1"})
    eval_sets.run(["synth_eval"], None, overrides, k=1, out=str(out), progress=lambda *a: None)
    with pytest.raises(UserError, match="different agent settings"):
        eval_sets.run(["synth_eval"], None, [*overrides, "agent.modules.memory.chunk_size=32"], k=1, out=str(out))


def test_two_evals_cannot_write_one_folder_at_once(tmp_path):
    from memfactory_cli.workflows import eval_sets

    with eval_sets.exclusive(tmp_path), pytest.raises(UserError, match="another `memfactory eval` is writing"):
        eval_sets.run(["synth_eval"], None, tiny_overrides(tmp_path / "x"), k=1, out=str(tmp_path))


def test_a_configured_judge_adds_a_judge_metric(one_thread, tmp_path):
    from memfactory_cli.rewards.judge.loopback import LoopbackJudge
    from memfactory_cli.workflows import eval_sets

    overrides = tiny_overrides(tmp_path / "x", **{"data.synth.n_eval": "2"})
    with LoopbackJudge() as judge:
        args = f"{{backend: openai, base_url: '{judge.base_url}', model: judge, require_boxed: false, cache: false}}"
        (entry,) = eval_sets.run(["synth_eval"], None, [*overrides, f"eval.judge={args}"], k=2, out=str(tmp_path / "o"), progress=lambda *a: None)
        assert judge.requests >= 1
    assert set(entry["metrics"]) == {"em", "sub_em", "f1", "judge"}
    assert entry["judge"] == {"backend": "openai", "model": "judge", "template": "binary"}
    assert json.loads((tmp_path / "o" / "summary.json").read_text())[0]["judge"]["model"] == "judge"
    rows = _rows(tmp_path / "o" / "results.jsonl")
    assert all(r["scores"]["judge"] in (0.0, 1.0) for r in rows)


# ---------------------------------------------------------------- the command, the summaries, the viewer


def test_eval_command_writes_every_output_offline(tmp_path):
    out = tmp_path / "eval"
    args = ["--set", "eval_fwe_1024,synth_eval", "--recipe", RECIPE, "--k", "2", "--limit", "2", "--out", str(out)]
    result = memfactory("eval", *args, "eval.top_p=1.0", cwd=tmp_path)  # top_p < 1 sorts 151k logits per token
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(out / "results.jsonl")
    assert len(rows) == 8 and len(_keys(rows)) == 8
    assert all(r["memories"] and "answer" in r and set(r["scores"]) for r in rows)
    assert all(r["chunks"] and len(r["chunks"]) == len(r["memories"]) for r in rows)  # the chunk each memory read
    entries = json.loads((out / "summary.json").read_text())
    assert [(e["set"], e["n"], e["k"], e["model"]) for e in entries] == [("eval_fwe_1024", 2, 2, "tiny-qwen3"), ("synth_eval", 2, 2, "tiny-qwen3")]
    assert set(entries[0]["metrics"]) == {"string_match_all"} and set(entries[1]["metrics"]) == {"em", "sub_em", "f1"}
    assert all(set(stats) == {"mean", "stderr"} for e in entries for stats in e["metrics"].values())
    assert "| tiny-qwen3 |" in (out / "summary.md").read_text() and "## Answer retention" in (out / "summary.md").read_text()
    assert all(e["retention"]["trajectories"] == 4 for e in entries)  # n x k trajectories, each with its chunks
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "avg@2" in result.stdout

    html = tmp_path / "trace.html"
    result = memfactory("infer", "--from", str(out / "results.jsonl"), "--html", str(html), "--set", "synth_eval", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    page = html.read_text()
    assert page.count("<details class='traj'") == 4 and "memory after chunk 1/" in page and "sub_em" in page


@pytest.mark.parametrize(
    "args,match",
    [
        (["--set", "nope_set"], "dataset 'nope_set' is not a registered name"),
        (["--set", "eval_100"], "data/eval_100.json not found"),
        (["--set", "synth_eval", "--k", "0"], "--k must be >= 1"),
        (["--set", "synth_eval", "eval.temperature=0", "--k", "2"], "eval.temperature must be > 0"),
    ],
)
def test_eval_bad_input_is_one_line_and_exit_2(args, match, tmp_path):
    result = memfactory("eval", "--recipe", RECIPE, "--out", str(tmp_path / "o"), *args, cwd=tmp_path, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and match in lines[0], result.stderr[-2000:]


def test_diff_highlights_changes_and_escapes_model_text():
    assert diff_html("Ada lives in Oslo.", "Ada lives in Rome.") == "Ada lives in <del>Oslo.</del><ins>Rome.</ins>"
    assert diff_html("", "x <script>") == "<ins>x &lt;script&gt;</ins>"
    page = trace_html([{"question": "Q?", "answers": ["<b>"], "memories": ["one", "one two"], "answer": "\\boxed{two}", "scores": {"em": 1.0}}])
    assert "<ins>one</ins>" in page and "one<ins> two</ins>" in page and "&lt;b&gt;" in page and "<b>1.000</b>" in page
    assert "http" not in page.replace("http-equiv", "")  # self-contained: no external resource


def test_comparison_table_has_one_row_per_model_and_an_average():
    def entry(set_name, model, metric, mean):
        return {"set": set_name, "model": model, "n": 2, "k": 4, "metrics": {metric: {"mean": mean, "stderr": 0.1}}}

    entries = [entry("eval_50", "base", "sub_em", 0.5), entry("eval_fwe_16384", "base", "string_match_all", 0.25)]
    entries.append(entry("eval_50", "rl", "sub_em", 0.75))
    header, rows = comparison(entries)
    assert header == ["model", "eval_50 (sub_em)", "eval_fwe_16384 (string_match_all)", "Avg"]
    assert rows == [["base", "0.5000 ± 0.1000", "0.2500 ± 0.1000", "0.3750"], ["rl", "0.7500 ± 0.1000", "-", "-"]]
