"""Retrievers rank the right memory first on hand cases, with the real offline embedding model."""

from __future__ import annotations

import pytest

from memfactory_cli.modules.retriever import BM25Retriever, EmbeddingRetriever, HybridRetriever
from memfactory_cli.registry import registry

MEMORIES = [
    "Caroline adopted a golden retriever puppy named Biscuit last spring.",
    "Melanie ran a charity marathon in Boston in April.",
    "Caroline works as a counselor at an LGBTQ support centre.",
    "Melanie painted a sunrise over the lake with her kids.",
]


@pytest.fixture(scope="module")
def embedding():
    return EmbeddingRetriever()


def test_embedding_ranks_paraphrase_first(embedding):
    # No word of the query but the name occurs in the right memory: only the semantic model can get this.
    assert embedding.search("What kind of dog does Caroline own?", MEMORIES, 2)[0] == 0
    assert embedding.search("Which race did Melanie take part in?", MEMORIES, 1) == [1]


def test_embeddings_are_normalised_and_cached(embedding):
    vectors = embedding.embed(MEMORIES + MEMORIES[:1])
    assert vectors.shape == (5, embedding.dim) == (5, 384)
    assert ((vectors.norm(dim=1) - 1).abs() < 1e-5).all()
    assert (vectors[0] == vectors[4]).all()


def test_bm25_keyword_match_and_empty_bank():
    bm25 = BM25Retriever()
    assert bm25.search("marathon Boston", MEMORIES, 1) == [1]
    assert bm25.search("anything", [], 3) == []


def test_hybrid_fuses_both_rankings():
    hybrid = HybridRetriever()
    assert hybrid.search("Where does Caroline work as a counselor?", MEMORIES, 1) == [2]
    scores = hybrid.scores("What did Melanie paint with her kids?", MEMORIES)
    assert max(range(4), key=scores.__getitem__) == 3


def test_registered_and_swappable():
    assert {"embedding", "bm25", "hybrid"} <= set(registry("retriever").names())
