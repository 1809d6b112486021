"""Near-duplicate cases built from text the project already has: the 辽宁日报 reference article
(tests/fixtures/qutoutiao/detail_json/58837411.json), its reposts as aggregators make them
(aggregator/devtools/reposts.py: ad line, 来源 footer, editor's note, punctuation and width
changes, a trimmed ending, other image addresses, other wrapper HTML, copy-editing), and hard
negatives made from it and from templates written for this project. Seeded: the same cases on
every run."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import lxml.html

from aggregator.devtools.reposts import (
    VARIATIONS,
    boilerplate_under,
    combination,
    employment_paragraphs,
    paragraphs,
    render,
    repost,
    repost_kind,
    template_pairs,
    weather_paragraphs,
)
from aggregator.devtools.reposts import original as served

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REFERENCE_JSON = FIXTURES / "qutoutiao" / "detail_json" / "58837411.json"
SEED = 58837411


@dataclass(frozen=True)
class Case:
    kind: str
    duplicate: bool
    a: str  # body HTML
    b: str


def reference_detail() -> str:
    """The reference article's body as the 趣头条 detail JSON serves it."""
    return json.loads(REFERENCE_JSON.read_text(encoding="utf-8"))["detail"]


def reference_article() -> dict:
    """The reference article as plain paragraphs (`id`, `text`), as the repost builders take it."""
    tree = lxml.html.fragment_fromstring(reference_detail(), create_parent="div")
    texts = [" ".join(p.text_content().split()) for p in tree.iter("p")]
    return {"id": "58837411", "text": "\n".join(t for t in texts if t)}


def original() -> str:
    return served(reference_article(), "static.1sapp.com")


def positives() -> list[Case]:
    """The reference against each variation alone, then against a few combinations of two or
    three of them."""
    article, rng = reference_article(), random.Random(SEED)
    combos = [(v,) for v in VARIATIONS]
    combos += [combination(rng) for _ in range(9)]
    return [Case(repost_kind(c), True, original(), repost(article, c, rng)) for c in combos]


def negatives() -> list[Case]:
    """Different stories that look alike."""
    article = reference_article()
    paras = paragraphs(article["text"])
    cases = []
    # the first half of the story, then another text of the same length
    half = len(paras) // 2
    filler, day = [], 1
    while sum(map(len, filler)) < sum(map(len, paras[half:])):
        filler += weather_paragraphs(random.Random(SEED + day), day)
        day += 1
    cases.append(
        Case("first_half_then_other", False, original(), render(paras[:half] + filler, []))
    )
    # one template, other figures
    cases += [Case(t.kind, False, t.a, t.b) for t in template_pairs(SEED, 5)]
    # two different short texts under one long boilerplate footer
    weather = weather_paragraphs(random.Random(SEED), 3)
    employment = employment_paragraphs(random.Random(SEED), 3)
    cases.append(
        Case(
            "shared_footer",
            False,
            boilerplate_under(weather[:4]),
            boilerplate_under(employment[:2]),
        )
    )
    return cases
