"""RMM's retrospective reflection: a residual linear reranker over frozen embeddings, trained online by REINFORCE.

Paper-faithful parts (Tan et al. 2025, see docs/rmm.md): q' = q + W_q q, m' = m + W_m m, score s_i = q'.m'_i, both
maps initialised N(0, 0.01) so the reranker starts as the embedder's own cosine ranking; Gumbel top-M selection of
M of the K retrieved candidates at temperature tau; reward +1 for a selected memory the LLM cited, -1 for one it did
not; REINFORCE with a constant baseline.

The paper leaves the factorisation of log P(selected) open. Here it is the exact one for Gumbel top-M: perturbing
s/tau with Gumbel(0, 1) noise and keeping the M largest draws an *ordered* M-subset from the Plackett-Luce
distribution of softmax(s/tau) (sampling without replacement), so log P = sum_k [s_(k)/tau - logsumexp of the
candidates not yet picked]. Each selected item's factor is weighted by its own (reward - baseline). Only the selected
items carry a reward term; unselected candidates enter only through the normalisers of those factors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from memfactory_cli.errors import UserError


@dataclass
class RerankerConfig:
    top_k: int = 20  # K: candidates retrieved by the frozen embedder
    top_m: int = 5  # M: memories kept and shown to the LLM
    tau: float = 0.5  # Gumbel-softmax temperature
    learning_rate: float = 1e-3
    baseline: float = 0.5
    batch_size: int = 4  # queries per optimizer step (the paper's batch size)
    init_std: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("top_k", "top_m", "batch_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"reranker.{name} must be positive, got {getattr(self, name)}")
        if self.top_m > self.top_k:
            raise UserError(f"reranker.top_m ({self.top_m}) must be <= top_k ({self.top_k})")
        if self.tau <= 0:
            raise UserError(f"reranker.tau must be > 0, got {self.tau}")


def gumbel_top_m(scores: torch.Tensor, m: int, tau: float, generator: torch.Generator | None = None) -> list[int]:
    """Indices of an ordered M-subset drawn by Gumbel top-M: argsort(s/tau + g), g = -log(-log u), u ~ U(0, 1)."""
    u = torch.rand(scores.shape, generator=generator, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
    keys = scores.detach().double() / tau - torch.log(-torch.log(u))
    return torch.argsort(keys, descending=True)[: min(m, scores.numel())].tolist()


def top_m(scores: torch.Tensor, m: int) -> list[int]:
    """Deterministic selection for evaluation: the M highest scores, ties broken by position."""
    order = sorted(range(scores.numel()), key=lambda i: (-float(scores[i]), i))
    return order[: min(m, scores.numel())]


def selection_log_probs(scores: torch.Tensor, selected: list[int], tau: float) -> torch.Tensor:
    """Per-position log-probabilities of the ordered selection under Plackett-Luce(softmax(scores / tau)).

    Their sum is log P(selected sequence); factor k is log softmax over the candidates not picked before k.
    """
    logits = scores / tau
    remaining = torch.ones_like(logits, dtype=torch.bool)
    out = []
    for i in selected:
        out.append(logits[i] - torch.logsumexp(logits[remaining], dim=0))
        remaining = remaining.clone()
        remaining[i] = False
    return torch.stack(out) if out else logits.new_zeros(0)


class LinearReranker(torch.nn.Module):
    """q' = q + W_q q, m' = m + W_m m, s = q'.m'. The dimension is read from the embedder, never hard-coded."""

    def __init__(self, dim: int, config: RerankerConfig | None = None):
        super().__init__()
        self.config = config or RerankerConfig()
        self.dim = dim
        gen = torch.Generator().manual_seed(self.config.seed)
        self.w_q = torch.nn.Parameter(torch.randn(dim, dim, generator=gen) * self.config.init_std)
        self.w_m = torch.nn.Parameter(torch.randn(dim, dim, generator=gen) * self.config.init_std)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=self.config.learning_rate)
        self.sampler = torch.Generator().manual_seed(self.config.seed + 1)
        self._pending = 0  # queries accumulated since the last optimizer step

    def forward(self, query: torch.Tensor, memories: torch.Tensor) -> torch.Tensor:
        """Scores of ``memories`` (K x d) for ``query`` (d)."""
        if memories.dim() != 2 or memories.size(-1) != self.dim or query.size(-1) != self.dim:
            raise ValueError(f"reranker expects {self.dim}-dim embeddings, got query {tuple(query.shape)}, memories {tuple(memories.shape)}")
        q = query + query @ self.w_q.T
        m = memories + memories @ self.w_m.T
        return m @ q

    def select(self, query: torch.Tensor, memories: torch.Tensor, sample: bool) -> list[int]:
        """M of the K candidates: Gumbel top-M while training, plain top-M in evaluation."""
        with torch.no_grad():
            scores = self(query, memories)
        m = self.config.top_m
        return gumbel_top_m(scores, m, self.config.tau, self.sampler) if sample else top_m(scores, m)

    def reinforce(self, query: torch.Tensor, memories: torch.Tensor, selected: list[int], rewards: list[float]) -> float:
        """Accumulate the REINFORCE gradient of one query; step the optimizer every ``batch_size`` queries.

        loss = -sum_k (R_k - b) log p_k over the selected items only. Returns the loss value.
        """
        if len(selected) != len(rewards):
            raise ValueError("one reward per selected memory")
        if not selected:
            return 0.0
        log_p = selection_log_probs(self(query, memories), selected, self.config.tau)
        advantage = torch.tensor(rewards, dtype=log_p.dtype) - self.config.baseline
        loss = -(advantage * log_p).sum() / self.config.batch_size
        loss.backward()
        self._pending += 1
        if self._pending >= self.config.batch_size:
            self.step()
        return float(loss.detach()) * self.config.batch_size

    @property
    def pending(self) -> int:
        """Queries whose gradient is accumulated but not yet applied."""
        return self._pending

    def step(self) -> None:
        """Apply the accumulated gradient (also called at the end of training, so no gradient is lost)."""
        if self._pending:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self._pending = 0

    def save(self, path: Path) -> None:
        """Weights and the settings they were trained with, written atomically (a temp file, then a rename)."""
        import dataclasses

        from memfactory_cli.io import atomic_path

        with atomic_path(path) as tmp:
            torch.save({"dim": self.dim, "config": dataclasses.asdict(self.config), "w_q": self.w_q.data, "w_m": self.w_m.data}, tmp)

    def load(self, path: str | Path) -> None:
        try:
            state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise UserError(f"reranker weights not found: {path}") from None
        except Exception as exc:
            raise UserError(f"{path}: not a reranker weights file ({str(exc).splitlines()[0]})") from None
        if state.get("dim") != self.dim:
            raise UserError(f"{path}: reranker weights are {state.get('dim')}-dim but the embedder gives {self.dim}-dim vectors")
        with torch.no_grad():
            self.w_q.copy_(state["w_q"])
            self.w_m.copy_(state["w_m"])
