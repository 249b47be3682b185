"""The linear reranker: Gumbel top-M against exact Plackett-Luce probabilities, REINFORCE direction, save/load."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from memfactory_cli.errors import UserError
from memfactory_cli.modules.reranker import LinearReranker, RerankerConfig, gumbel_top_m, selection_log_probs, top_m

SCORES = torch.tensor([1.0, 0.4, 0.0, -0.5])
TAU = 0.5
N = 20000


def _plackett_luce(scores: torch.Tensor, seq: tuple[int, ...], tau: float) -> float:
    """Exact probability of drawing ``seq`` in order, without replacement, from softmax(scores / tau)."""
    w = torch.exp(scores.double() / tau).tolist()
    left, p = sum(w), 1.0
    for i in seq:
        p *= w[i] / left
        left -= w[i]
    return p


def _draws(m: int) -> list[tuple[int, ...]]:
    gen = torch.Generator().manual_seed(1234)
    return [tuple(gumbel_top_m(SCORES, m, TAU, gen)) for _ in range(N)]


def _close(freq: float, p: float) -> bool:
    return abs(freq - p) < 4.5 * math.sqrt(p * (1 - p) / N) + 1e-9


def test_m1_inclusion_equals_softmax_over_tau():
    draws = _draws(1)
    expected = torch.softmax(SCORES / TAU, 0).tolist()
    for i, p in enumerate(expected):
        freq = sum(d == (i,) for d in draws) / N
        assert _close(freq, p), (i, freq, p)


def test_m2_ordered_pairs_and_inclusion_match_exact_enumeration():
    draws = _draws(2)
    sequences = list(itertools.permutations(range(4), 2))
    exact = {seq: _plackett_luce(SCORES, seq, TAU) for seq in sequences}
    assert math.isclose(sum(exact.values()), 1.0, rel_tol=1e-9)
    for seq, p in exact.items():
        assert _close(sum(d == seq for d in draws) / N, p), seq
    for i in range(4):
        p_in = sum(p for seq, p in exact.items() if i in seq)
        assert _close(sum(i in d for d in draws) / N, p_in), i
    # the analytic log-probabilities used by REINFORCE are the same distribution
    for seq, p in exact.items():
        assert math.isclose(selection_log_probs(SCORES.double(), list(seq), TAU).sum().exp().item(), p, rel_tol=1e-9)


def test_deterministic_top_m_breaks_ties_by_position():
    assert top_m(torch.tensor([0.1, 0.5, 0.5, -1.0]), 2) == [1, 2]


def _reranker(**kw) -> LinearReranker:
    return LinearReranker(8, RerankerConfig(top_k=6, top_m=3, batch_size=1, **kw))


def test_starts_near_the_embedder_ranking():
    torch.manual_seed(0)
    q, mem = torch.nn.functional.normalize(torch.randn(8), dim=0), torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    assert torch.allclose(_reranker()(q, mem), mem @ q, atol=0.05)


def test_reinforce_raises_cited_and_lowers_uncited_selected():
    torch.manual_seed(0)
    reranker = _reranker(learning_rate=0.01)
    q, mem = torch.nn.functional.normalize(torch.randn(8), dim=0), torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    selected = [4, 1, 2]
    before = selection_log_probs(reranker(q, mem).detach(), selected, 0.5)
    reranker.reinforce(q, mem, selected, [1.0, -1.0, -1.0])  # memory 4 cited, 1 and 2 not
    after = selection_log_probs(reranker(q, mem).detach(), selected, 0.5)
    assert after[0] > before[0] and after[1] < before[1]


def test_gradient_only_from_the_selected_items():
    """The loss has one term per selected item; with zero advantage on all of them nothing moves."""
    reranker = _reranker(baseline=1.0)
    q, mem = torch.randn(8), torch.randn(6, 8)
    w_q, w_m = reranker.w_q.detach().clone(), reranker.w_m.detach().clone()
    reranker.reinforce(q, mem, [0, 3, 5], [1.0, 1.0, 1.0])
    assert torch.equal(w_q, reranker.w_q) and torch.equal(w_m, reranker.w_m)


def test_steps_every_batch_size_queries_and_flushes_the_rest():
    reranker = LinearReranker(8, RerankerConfig(top_k=6, top_m=2, batch_size=3))
    q, mem = torch.randn(8), torch.randn(6, 8)
    w = reranker.w_m.detach().clone()
    reranker.reinforce(q, mem, [0, 1], [1.0, -1.0])
    reranker.reinforce(q, mem, [2, 1], [1.0, -1.0])
    assert torch.equal(w, reranker.w_m)  # accumulating
    reranker.step()
    assert not torch.equal(w, reranker.w_m)


def test_save_load_round_trip_and_dimension_check(tmp_path):
    a = _reranker(seed=1)
    a.save(tmp_path / "reranker.pt")
    b = _reranker(seed=2)
    b.load(tmp_path / "reranker.pt")
    assert torch.equal(a.w_q, b.w_q) and torch.equal(a.w_m, b.w_m)
    with pytest.raises(UserError, match="8-dim but the embedder gives 4-dim"):
        LinearReranker(4).load(tmp_path / "reranker.pt")
    with pytest.raises(UserError, match="not found"):
        b.load(tmp_path / "missing.pt")


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="top_m"):
        RerankerConfig(top_k=3, top_m=5)
    with pytest.raises(UserError, match="tau"):
        RerankerConfig(tau=0)
