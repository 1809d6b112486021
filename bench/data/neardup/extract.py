"""Build the near-duplicate corpus (articles.jsonl) from the three public sources named in
SOURCES.md. Run with the sources checked out at the pinned commits (see SOURCES.md):

    python bench/data/neardup/extract.py --hecate DIR --clts FILE --sogou FILE --out PATH

DIR is the checkout's `cnews/` folder, the two FILEs its `samples.txt` and
`news_tensite_xml.smarty.dat`. PATH is where the corpus goes; it is not committed to this
repository (SOURCES.md says where it is expected). It only selects, trims and cleans text; the
labelled pairs are made from the corpus by bench/neardup_set.py.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

MAX_CHARS = 3600  # long enough for the 3,000-character throughput articles, keeps the file small


def _good_char(ch: str) -> bool:
    """A character of GB2312's level-1 hanzi, its punctuation rows, or ASCII."""
    try:
        raw = ch.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return len(raw) == 1 or 0xB0 <= raw[0] <= 0xD7 or 0xA1 <= raw[0] <= 0xA9


def _score(text: str) -> float:
    return sum(map(_good_char, text)) / max(1, len(text))


def sogou_paragraphs(content: bytes) -> list[str]:
    """SogouCA's sample lost one byte at every paragraph break (written as '?'), so the GBK
    after it is decoded one byte off. Each paragraph is decoded at whichever alignment gives
    more common characters; leftovers of the broken character are stripped."""
    paragraphs = []
    for part in content.split(b"?"):
        best = max(
            (_score(s), s)
            for s in (
                part.decode("gbk", errors="replace"),
                part[1:].decode("gbk", errors="replace"),
            )
        )[1]
        best = best.replace("\ufffd", "")
        while best and not _good_char(best[0]):
            best = best[1:]
        if best.strip():
            paragraphs.append(best.strip())
    return paragraphs


def hecate(directory: Path) -> list[dict]:
    articles: list[list[str]] = []
    for name in ("train", "val", "test"):
        for line in (directory / f"cnews.{name}.txt").read_text(encoding="utf-8").splitlines():
            match = re.match(r'^"?([^;"\n]{1,20});;(.*)$', line)
            if match:
                articles.append([match.group(1), match.group(2)])
            elif articles:
                articles[-1][1] += "\n" + line
    out = []
    for number, (category, text) in enumerate(articles):
        text = text.strip().strip('"').replace('""', '"')
        if len(text) < 3000 or category == "nan":
            continue
        out.append(
            {
                "id": f"jqzx-{number:03d}",
                "source": "hecate",
                "category": category,
                "text": _trim(text),
            }
        )
    return out


def clts(path: Path) -> list[dict]:
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        record = json.loads(line) if line.strip().startswith("{") else {}
        if "article" in record:
            out.append(
                {
                    "id": f"thepaper-{number:02d}",
                    "source": "clts",
                    "category": "thepaper",
                    "text": _trim(record["article"]),
                }
            )
    return out


def sogou(path: Path) -> list[dict]:
    raw = path.read_bytes()
    out = []
    for number, doc in enumerate(re.findall(rb"<doc>(.*?)</doc>", raw, re.S)):
        url = re.search(rb"<url>(.*?)</url>", doc, re.S).group(1).decode("ascii", "replace")
        content = re.search(rb"<content>(.*?)</content>", doc, re.S).group(1)
        text = "\n".join(sogou_paragraphs(content))
        if len(text) < 120:
            continue
        host = url.split("/")[2] if url.count("/") >= 2 else "sohu"
        channel = host.split(".")[0]
        out.append(
            {
                "id": f"sohu-{number:03d}",
                "source": "sogou",
                "category": channel,
                "text": _trim(text),
            }
        )
    return out


def drop_near_duplicates(articles: list[dict]) -> list[dict]:
    """The sources carry a few stories twice (SogouCA has updated versions of one story): keep
    the first of any two whose 5-character shingle sets have a Jaccard similarity over 0.2, so
    that every "different story" pair of the labelled set really is one."""

    def shingles(text: str) -> set[str]:
        text = "".join(c for c in text if c.isalnum())
        return {text[i : i + 5] for i in range(max(1, len(text) - 4))}

    kept: list[tuple[dict, set[str]]] = []
    for article in articles:
        own = shingles(article["text"])
        if all(len(own & other) / len(own | other) <= 0.2 for _, other in kept):
            kept.append((article, own))
    return [article for article, _ in kept]


def _trim(text: str) -> str:
    if len(text) <= MAX_CHARS:
        return text
    cut = text.rfind("。", 0, MAX_CHARS)
    return text[: cut + 1] if cut > MAX_CHARS // 2 else text[:MAX_CHARS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hecate", type=Path, required=True, help="the cnews/ folder")
    parser.add_argument("--clts", type=Path, required=True, help="samples.txt")
    parser.add_argument("--sogou", type=Path, required=True, help="news_tensite_xml.smarty.dat")
    parser.add_argument("--out", type=Path, required=True, help="the articles.jsonl to write")
    args = parser.parse_args()
    articles, seen = [], set()
    # the Hecate files repeat articles across train/val/test: keep the first copy
    for article in hecate(args.hecate) + clts(args.clts) + sogou(args.sogou):
        if article["text"][:100] not in seen:
            seen.add(article["text"][:100])
            articles.append(article)
    articles = drop_near_duplicates(articles)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as out:
        for article in articles:
            out.write(json.dumps(article, ensure_ascii=False) + "\n")
    print(len(articles), "articles written to", args.out)


if __name__ == "__main__":
    main()
