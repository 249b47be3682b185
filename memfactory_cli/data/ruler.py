"""RULER frequent-words extraction (fwe), regenerated offline with RULER's recipe under any tokenizer.

MemAgent's ``eval_fwe_16384.json`` is a port of NVIDIA RULER's ``freq_words_extraction.py``. Rebuilding it here
keeps ``eval_fwe_<len>`` usable without the hub and lets the length be measured with the evaluated model's own
tokenizer. What is kept from the recipe, so that the statistics match:

- samples come in parts of 16; part ``c`` seeds one RNG with ``seed + c`` (RULER seeds Python's global RNG; a
  private ``random.Random`` gives the same stream without touching global state);
- every sample draws its own vocabulary of ``length // 50`` random 6-letter lowercase words from that RNG (a
  calibration draw comes first, as in RULER), sorted, shuffled with a fresh ``Random(seed)``; rank 1 becomes
  ``"..."``, noise the question says to ignore;
- rank ``k`` occurs ``floor(W * k^-alpha / zeta(alpha))`` times (alpha = 2), the flat word list is shuffled with a
  fresh ``Random(seed)`` and joined by spaces; the answer is ranks 2-4;
- the word count ``W`` is calibrated once per part (start at ``length // 6``, grow by ``length // 32`` until the
  text reaches ``length`` tokens, step back once), and each sample shrinks by the same step while it is too long.

One addition: RULER only ever shrinks a sample by a whole step (~6% of the length), so its samples land anywhere
from ~7% short to exactly on target (MemAgent's file: 15.5K-16.3K tokens). Each sample here is then fitted to the
largest word count whose text still fits (a bisection inside one step), so every sample is within ~0.5% under the
target. The vocabulary, the counts' shape and the answers are unchanged by this.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from memfactory_cli.errors import UserError

QUESTION = (
    "Read the coded text and track the frequency of each coded word. Find the three most frequently appeared "
    "coded words. Do not provide any explanation. Please ignore the dots '....'. What are the three most "
    "frequently appeared words in the above coded text?"
)
ANSWER_PREFIX = "Answer: According to the coded text above, the three most frequently appeared words are:"
NOISE = "..."
MIN_LENGTH = 512  # below this the vocabulary (length // 50) is too small for a top-4 and the step is tiny


@dataclass(frozen=True)
class FweSpec:
    """One fwe set: ``length`` tokens of coded text per sample, ``samples`` samples in parts of ``per_part``."""

    length: int
    samples: int = 128
    per_part: int = 16
    seed: int = 42
    alpha: float = 2.0
    word_len: int = 6
    tokens_to_generate: int = 50  # only enters the items' ``length`` field, as in RULER

    def __post_init__(self) -> None:
        if self.length < MIN_LENGTH:
            raise UserError(f"eval_fwe_<len>: the length must be at least {MIN_LENGTH} tokens, got {self.length}")
        if self.samples < 1:
            raise UserError(f"eval_fwe: samples must be positive, got {self.samples}")

    @property
    def vocab_size(self) -> int:
        return self.length // 50

    @property
    def step(self) -> int:
        return self.length // 32


def zeta(alpha: float) -> float:
    """Riemann zeta for alpha > 1 (exactly pi^2/6 at 2, RULER's case), without SciPy."""
    if alpha == 2.0:
        return math.pi**2 / 6
    if alpha <= 1.0:
        raise ValueError(f"zeta needs alpha > 1, got {alpha}")
    n = 20  # direct sum, then an Euler-Maclaurin tail accurate to ~1e-15 from here
    head = sum(k**-alpha for k in range(1, n))
    tail = n ** (1 - alpha) / (alpha - 1) + n**-alpha / 2 + alpha * n ** (-alpha - 1) / 12
    tail -= alpha * (alpha + 1) * (alpha + 2) * n ** (-alpha - 3) / 720
    return head + tail


def vocabulary(rng: random.Random, spec: FweSpec, part_seed: int) -> list[str]:
    """``vocab_size`` distinct coded words in rank order; rank 1 is the noise token."""
    letters = string.ascii_lowercase
    words = ["".join(rng.choices(letters, k=spec.word_len)) for _ in range(spec.vocab_size)]
    while len(set(words)) < spec.vocab_size:
        words.append("".join(rng.choices(letters, k=spec.word_len)))
    vocab = sorted(set(words))
    random.Random(part_seed).shuffle(vocab)
    vocab[0] = NOISE
    return vocab


def counts(num_words: int, vocab_size: int, alpha: float) -> list[int]:
    z = zeta(alpha)
    return [int(num_words * k**-alpha / z) for k in range(1, vocab_size + 1)]


def coded_text(vocab: list[str], num_words: int, spec: FweSpec, part_seed: int) -> str:
    flat = [w for w, c in zip(vocab, counts(num_words, len(vocab), spec.alpha)) for _ in range(c)]
    random.Random(part_seed).shuffle(flat)
    return " ".join(flat)


def _fit(n_tokens: Callable[[int], int], start: int, spec: FweSpec) -> tuple[int, int]:
    """The largest word count (to within 1/64 of a step) whose text has at most ``length`` tokens, and its tokens.

    RULER's step-down first, then a step up while a whole step still fits, then a bisection within one step
    (token counts grow with the word count).
    """
    seen: dict[int, int] = {}

    def tokens(w: int) -> int:
        if w not in seen:
            seen[w] = n_tokens(w)
        return seen[w]

    w = start
    while tokens(w) > spec.length and w > spec.step:
        w -= spec.step
    while tokens(w + spec.step) <= spec.length:
        w += spec.step
    lo, hi = w, w + spec.step
    while hi - lo > max(1, spec.step // 64):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if tokens(mid) <= spec.length else (lo, mid)
    return lo, tokens(lo)


def generate(spec: FweSpec, count_tokens: Callable[[str], int], limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Yield RULER-schema items (``index``, ``input``, ``context``, ``outputs``, ``answer_prefix``, ``length``).

    The first ``n`` items do not depend on ``limit``, so a limited set is a prefix of the full one. ``index`` runs
    over the whole set (RULER restarts it in every part, which makes ids collide).
    """
    total = spec.samples if limit is None else min(limit, spec.samples)
    index = 0
    for part in range(math.ceil(spec.samples / spec.per_part)):
        if index >= total:
            return
        part_seed = spec.seed + part
        rng = random.Random(part_seed)
        vocab = vocabulary(rng, spec, part_seed)
        calibrated = spec.length // spec.word_len
        while count_tokens(coded_text(vocab, calibrated, spec, part_seed)) < spec.length:
            calibrated += spec.step
        calibrated -= spec.step
        for _ in range(min(spec.per_part, total - index)):
            vocab = vocabulary(rng, spec, part_seed)
            num_words, n_tokens = _fit(lambda w, v=vocab, s=part_seed: count_tokens(coded_text(v, w, spec, s)), calibrated, spec)
            yield {
                "index": index,
                "input": QUESTION,
                "context": coded_text(vocab, num_words, spec, part_seed),
                "outputs": vocab[1:4],
                "answer_prefix": ANSWER_PREFIX,
                "length": n_tokens + spec.tokens_to_generate,
            }
            index += 1


def token_counter(tokenizer: Any) -> Callable[[str], int]:
    """Tokens of a text under ``tokenizer``, without special tokens (RULER's ``text_to_tokens``)."""
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
