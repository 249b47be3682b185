"""LoCoMo's own answer scores, as ``snap-research/LoCoMo`` ``task_eval/evaluation.py`` computes them.

Beside the SQuAD-style ``em`` / ``f1`` / ``bleu1`` (``rewards/memory_r1.py``), so a Memory-R1 number can be put next
to the paper's Table 1 with its definition named (``locomo_f1``, ``locomo_bleu1`` in ``summary.json``):

- normalisation (``normalize_answer``): commas dropped, lower case, ASCII punctuation dropped, the words a / an /
  the / **and** dropped, whitespace collapsed; then every token is Porter-stemmed (nltk's ``PorterStemmer``, which
  needs no data download);
- F1 is the multiset token F1 of the stemmed tokens (``f1_score``);
- category 1 (multi-hop): prediction and gold are split on ",", and the score is the mean over gold parts of the
  best F1 of any predicted part (``f1``);
- category 3 (open-domain): only the gold text before the first ";" counts;
- categories 2 and 4: the plain F1; category 5 (adversarial) is not scored here (None): Memory-R1 leaves it out.

LoCoMo's evaluation has no BLEU. ``locomo_bleu1`` is unigram BLEU (clipped precision times the brevity penalty, one
reference, no smoothing) over the same stemmed tokens and the same category handling of the gold text (category 1
as one text). Mem0's script, which Memory-R1's baselines follow, instead tokenises with nltk's ``word_tokenize``
and smooths with ``method1`` (a wrong answer then scores 0.1 / its length rather than 0).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from functools import lru_cache

LOCOMO_METRICS = ("locomo_f1", "locomo_bleu1")
_ARTICLES = re.compile(r"\b(a|an|the|and)\b")
_PUNCT = set(string.punctuation)


@lru_cache(maxsize=1)
def _stemmer():
    from nltk.stem import PorterStemmer

    return PorterStemmer()


def normalize(text: str) -> str:
    """LoCoMo's ``normalize_answer``: commas, case, punctuation, a/an/the/and, whitespace."""
    text = "".join(ch for ch in text.replace(",", "").lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def tokens(text: str) -> list[str]:
    stem = _stemmer().stem
    return [stem(w) for w in normalize(text).split()]


def token_f1(prediction: str, gold: str) -> float:
    """LoCoMo's ``f1_score``."""
    p, g = tokens(prediction), tokens(gold)
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def multi_f1(prediction: str, gold: str) -> float:
    """LoCoMo's ``f1`` for multi-answer (category 1) questions: comma-separated parts on both sides."""
    predictions = [p.strip() for p in prediction.split(",")]
    golds = [g.strip() for g in gold.split(",")]
    return sum(max(token_f1(p, g) for p in predictions) for g in golds) / len(golds)


def bleu1(prediction: str, gold: str) -> float:
    p, g = tokens(prediction), tokens(gold)
    if not p or not g:
        return 0.0
    clipped = sum((Counter(p) & Counter(g)).values())
    brevity = 1.0 if len(p) > len(g) else math.exp(1 - len(g) / len(p))
    return brevity * clipped / len(p)


def locomo_scores(prediction: str | None, gold: str, category: int | None) -> dict[str, float | None]:
    """``locomo_f1`` and ``locomo_bleu1`` of one parsed answer against LoCoMo's single gold answer.

    None for both when the category is not one LoCoMo scores by F1 (5 = adversarial, or unknown) or the gold is
    blank; 0 for both when the model gave no answer.
    """
    gold = str(gold)
    if category not in (1, 2, 3, 4) or not gold.strip():
        return dict.fromkeys(LOCOMO_METRICS)
    if prediction is None:
        return dict.fromkeys(LOCOMO_METRICS, 0.0)
    if category == 3:
        gold = gold.split(";")[0].strip()
    f1 = multi_f1(prediction, gold) if category == 1 else token_f1(prediction, gold)
    return {"locomo_f1": f1, "locomo_bleu1": bleu1(prediction, gold)}
