"""A seeded synthetic long-document QA set in MemAgent's schema, for CPU training, tests and benchmarks.

A document mixes filler sentences with facts about people (city, job, pet, colour). One fact answers the question;
the same relation for other people acts as a distractor, so a memory that keeps "a city" rather than "the asked
person's city" is wrong. Multi-hop questions ask about a person's colleague, whose link sits elsewhere in the text.
Training and held-out sets draw first names from disjoint pools, so held-out people are never seen in training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from memfactory_cli.errors import UserError

TRAIN_FIRST = """Alice Brian Chloe Daniel Emma Felix Grace Henry Isla Jack Kara Liam Maya Noah Olive Peter Quinn Rosa
Sam Tara Umar Vera Will Xena Yuri Zoe Aaron Bella Caleb Dana Ethan Fiona Gavin Hazel Ivan Jade Kevin Lena Marco Nina
Oscar Paula Ralph Sofia Tomas Ursula Victor Wendy""".split()
HELD_OUT_FIRST = """Abel Beth Cyrus Delia Enzo Freya Gideon Hilda Igor Joy Kurt Leah Milo Nora Otto Pia Rufus Stella
Theo Una Vince Willa Xavier Yara Zane Ada Boris Cleo Dante Elsa""".split()
LAST = """Adams Baker Carter Dixon Evans Foster Garcia Hughes Irwin Jensen Keller Lopez Morgan Nolan Owens Parker Reed
Shaw Turner Vance Walsh Young""".split()
CITIES = """Paris Lisbon Oslo Vienna Dublin Prague Madrid Berlin Athens Warsaw Cairo Lima Quito Seoul Tokyo Hanoi
Nairobi Dakar Rome Bern Riga Sofia Kyoto Porto""".split()
JOBS = """baker pilot nurse farmer lawyer painter dentist plumber chemist teacher sailor tailor""".split()
PETS = """parrot rabbit turtle hamster goldfish ferret lizard pony""".split()
COLOURS = """red blue green yellow purple orange silver brown""".split()

RELATIONS: dict[str, tuple[list[str], str, str]] = {
    "city": (CITIES, "{p} lives in {v}.", "Which city does {p} live in?"),
    "job": (JOBS, "{p} works as a {v}.", "What is the job of {p}?"),
    "pet": (PETS, "{p} keeps a {v} at home.", "What animal does {p} keep at home?"),
    "colour": (COLOURS, "The favourite colour of {p} is {v}.", "What is the favourite colour of {p}?"),
}
MULTI_HOP_LINK = "{p} shares an office with {q}."
MULTI_HOP_QUESTION = {
    "city": "Which city does the office mate of {p} live in?",
    "job": "What is the job of the office mate of {p}?",
    "pet": "What animal does the office mate of {p} keep at home?",
    "colour": "What is the favourite colour of the office mate of {p}?",
}
FILLER = [
    "The {adj} {noun} near the {place} was repaired on {day}.",
    "On {day} the {place} stayed {adj} until late in the evening.",
    "A {adj} {noun} was delivered to the {place} last week.",
    "Nobody expected the {noun} at the {place} to look so {adj}.",
    "Visitors to the {place} often talk about the {adj} {noun}.",
]
ADJ = "quiet old bright narrow wooden busy small heavy shiny dusty".split()
NOUN = "bench lamp clock bridge fountain gate statue window ladder kiosk".split()
PLACE = "harbour market library station garden museum square bakery school theatre".split()
DAY = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()


@dataclass
class SynthConfig:
    """Options of the generator; recipes set them under ``data.synth``."""

    n_train: int = 512
    n_eval: int = 64
    people: int = 4
    filler_sentences: int = 12
    multi_hop_fraction: float = 0.0
    relations: tuple[str, ...] = ("city", "job", "pet", "colour")

    def __post_init__(self) -> None:
        self.relations = tuple(self.relations)
        if self.people < 2 or self.filler_sentences < 0 or self.n_train < 0 or self.n_eval < 0:
            raise UserError("data.synth: people must be >= 2 and sizes must be >= 0")
        for rel in self.relations:
            if rel not in RELATIONS:
                raise UserError(f"data.synth.relations: unknown relation '{rel}'; valid: {', '.join(RELATIONS)}")


def _filler(rng: random.Random) -> str:
    return rng.choice(FILLER).format(
        adj=rng.choice(ADJ), noun=rng.choice(NOUN), place=rng.choice(PLACE), day=rng.choice(DAY)
    )


def make_item(rng: random.Random, cfg: SynthConfig, first_names: list[str], index: int) -> dict[str, Any]:
    """One question with its document, in MemAgent's training schema."""
    names = [f"{a} {b}" for a, b in zip(rng.sample(first_names, cfg.people), rng.sample(LAST, cfg.people))]
    relation = rng.choice(list(cfg.relations))
    values, fact_template, question_template = RELATIONS[relation]
    person_values = dict(zip(names, rng.sample(values, cfg.people)))
    sentences = [fact_template.format(p=p, v=v) for p, v in person_values.items()]
    others = [r for r in cfg.relations if r != relation]
    if others:  # with a single relation, extra facts would contradict the real ones
        other_values, other_template, _ = RELATIONS[rng.choice(others)]
        sentences += [other_template.format(p=p, v=rng.choice(other_values)) for p in rng.sample(names, 2)]
    multi_hop = rng.random() < cfg.multi_hop_fraction
    asked = names[0]
    if multi_hop:
        mate = names[1]
        sentences.append(MULTI_HOP_LINK.format(p=asked, q=mate))
        question, answer = MULTI_HOP_QUESTION[relation].format(p=asked), person_values[mate]
    else:
        question, answer = question_template.format(p=asked), person_values[asked]
    sentences += [_filler(rng) for _ in range(cfg.filler_sentences)]
    rng.shuffle(sentences)
    return {
        "data_source": "memfactory_synth",
        "prompt": [{"role": "user", "content": question}],
        "context": " ".join(sentences),
        "reward_model": {"style": "rule", "ground_truth": [answer]},
        "extra_info": {"index": index, "question": question, "hops": 2 if multi_hop else 1, "relation": relation},
    }


def generate(cfg: SynthConfig, split: str, seed: int = 0) -> list[dict[str, Any]]:
    """``split`` is ``train`` or ``eval``; the two use disjoint first names and independent seeds."""
    if split not in ("train", "eval"):
        raise ValueError(split)
    rng = random.Random(f"{seed}-{split}")
    pool, n = (TRAIN_FIRST, cfg.n_train) if split == "train" else (HELD_OUT_FIRST, cfg.n_eval)
    return [make_item(rng, cfg, pool, i) for i in range(n)]


def to_eval_schema(item: dict[str, Any]) -> dict[str, Any]:
    """MemAgent's eval JSON row: ``{context, input, answers}``."""
    return {
        "context": item["context"],
        "input": item["prompt"][0]["content"],
        "answers": list(item["reward_model"]["ground_truth"]),
        "index": item["extra_info"]["index"],
    }


def corpus_texts(cfg: SynthConfig, n: int = 400) -> list[str]:
    """Plain texts (documents and questions) to train a tiny tokenizer on."""
    items = generate(SynthConfig(n_train=n, n_eval=0, multi_hop_fraction=0.3), "train", seed=123)
    return [t for it in items for t in (it["context"], it["prompt"][0]["content"])]
