"""Text fingerprints of articles: the visible text of the normalised body, folded so that what
aggregators change when they repost a story does not count, then a MinHash over character
shingles.

Why characters: Chinese has no spaces between words, and segmenting it (jieba & co.) is slow
and itself unstable across wording. Overlapping runs of `SHINGLE_CHARS` characters stand in for
words. The length was chosen by measurement on the labelled set (`python bench/bench_neardup.py
--shingles` prints the table): with 2-4 characters, two bulletins written from one template
share most shingles (employment figures: Jaccard 0.82 at 2, 0.60 at 4) and score higher than the
hardest reposts (0.59); the gap between the lowest repost and the highest different story grows
with the length up to 7 (0.14) and barely after it (0.15 at 8, 0.16 at 9; the shared-footer
pair becomes the binding negative), while the reposts' low tail starts to sink (5th percentile
0.785 at 7, 0.771 at 9). 7 it is.

Why one-permutation MinHash: a classic MinHash of k values applies k hash functions to every
shingle (a 3,000-character article has ~2,700), k x n work that cost ~100-250 µs with k = 64
even fully vectorised. One-permutation hashing (Li, Owen and Zhang, 2012) hashes each shingle
once: the top bits of its 64-bit hash pick one of k bins, the next 32 bits are its value, and
each bin keeps its smallest value (`np.minimum.at`), ~30 µs. The share of equal bins of two
signatures estimates the Jaccard similarity of the two shingle sets as a k-function MinHash
does (its variance is a little lower: bins are drawn without replacement). A bin that no
shingle fell into (short texts only: with 200 characters, ~3 of 64) borrows the value of the
first non-empty bin along a fixed random probe sequence ("optimal densification",
Shrivastava, 2017), which keeps the estimate unbiased. The shingle hashes are one vectorised
rolling hash over the article's UTF-32 code points (k multiply-adds over the whole array,
then the MurmurHash3 64-bit finalizer with the seed mixed in); datasketch hashes each shingle
in a Python loop (~1 µs a shingle), too slow here, and has no one-permutation scheme.
"""

from __future__ import annotations

import html
import itertools
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "DEFAULT_HASHES",
    "DEFAULT_SEED",
    "SHINGLE_CHARS",
    "Fingerprint",
    "Fingerprinter",
    "fold_text",
    "shingle_hashes",
    "visible_text",
]

SHINGLE_CHARS = 7
DEFAULT_HASHES = 128
DEFAULT_SEED = 13
SCHEME = "oph"  # what signatures are: recorded by the index with the seed and shingle length

_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_INVISIBLE_BLOCK = re.compile(
    r"<!--.*?-->|<(script|style|template|noscript|title)\b[^>]*>.*?</\1\s*>", re.I | re.S
)
_TAG = re.compile(r"""<(?:[^>"']|"[^"]*"|'[^']*')*>""")
_SLOW = 0xFFFFFFFF  # in _fold_table: see the neighbours (fold the whole string)
_EXPAND = 0xFFFFFFFE  # in _fold_table: several code points, whatever the neighbours

_MIX = np.uint64(0x9E3779B97F4A7C15)  # the rolling hash's multiplier (odd, 64-bit golden ratio)
_FMIX64 = (np.uint64(33), np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))
_EMPTY = np.uint32(0xFFFFFFFF)


def visible_text(body_html: str) -> str:
    """The text a reader sees in an article body: element text only (no attributes, so no
    image or link addresses), without comments, scripts or styles, entities decoded.

    The bodies come from the normaliser (nh3 output: well-formed, no scripts), so a tag-aware
    regular expression is enough and ~6x cheaper than building a tree; quoted attribute values
    containing `>` are skipped whole."""
    if not body_html:
        return ""
    text = _INVISIBLE_BLOCK.sub(" ", body_html)
    text = _TAG.sub(" ", text)
    return html.unescape(text)


_ITSELF = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3))


@lru_cache(maxsize=1)
def _fold_table() -> np.ndarray:
    """For each BMP code point: what `fold_text` makes of it alone (its NFKC form, case-folded,
    kept only if a letter or digit), as one code point; 0 to drop it; `_EXPAND` when it folds
    to several code points on its own, whatever its neighbours ("㎡" → "m2", "ﬁ" → "fi");
    `_SLOW` when it can combine with its neighbours (combining marks, jamo, and what decomposes
    into them), which only normalising the whole string gets right. Built once per process
    (~0.15 s)."""
    table = np.zeros(0x10000, dtype=np.uint32)
    # Ranges every character of which folds to itself (CJK ideographs, Hangul syllables: letters
    # without compatibility forms) or to nothing (private use): filled without asking unicodedata
    # 40,000 times, which made building the table cost half a second in every crawl process.
    for first, last in _ITSELF:
        table[first : last + 1] = np.arange(first, last + 1, dtype=np.uint32)
    rest, start = [], 0
    for first, last in (*_ITSELF, (0xD800, 0xF8FF)):  # surrogates and private use: nothing
        rest.append(range(start, first))
        start = last + 1
    rest.append(range(start, 0x10000))
    for code in itertools.chain(*rest):
        expansion = _fold_alone(code)
        if expansion is None:
            table[code] = _SLOW
        elif len(expansion) == 1:
            table[code] = ord(expansion)
        elif expansion:
            table[code] = _EXPAND
    return table


def _fold_alone(code: int) -> str | None:
    """What `fold_text` makes of one character whatever its neighbours, or None when its
    neighbours can change it: when its NFKC form holds a combining character (which composes
    with what precedes it) or a conjoining Hangul jamo (which composes with its neighbours).
    A precomposed letter ("ü") stays as it is: only a combining mark after it, itself a
    None character, could join it."""
    char = chr(code)
    normal = unicodedata.normalize("NFKC", char)
    for part in normal:
        point = ord(part)
        if unicodedata.combining(part) or unicodedata.category(part).startswith("M"):
            return None
        if 0x1100 <= point <= 0x11FF or 0xA960 <= point <= 0xA97F or 0xD7B0 <= point <= 0xD7FF:
            return None
    return "".join(c for c in normal.casefold() if c.isalnum())


@lru_cache(maxsize=4096)
def _expansion(code: int) -> np.ndarray | None:
    folded = _fold_alone(code)
    if folded is None:
        return None
    return np.frombuffer(folded.encode("utf-32-le"), dtype=np.uint32)


def _fold_codes(text: str) -> np.ndarray:
    """`fold_text` as an array of code points: each character through the per-character
    table, characters that fold to several code points (or lie outside the BMP) spliced in
    from a cache, and the string functions over the whole text only when a character can
    combine with its neighbours (not in Chinese text)."""
    if "://" in text or "www." in text or "WWW." in text:
        text = strip_addresses(text)
    codes = np.frombuffer(text.encode("utf-32-le", errors="replace"), dtype=np.uint32)
    if not codes.size:
        return codes
    table = _fold_table()
    if int(codes.max()) < 0x10000:
        folded = table[codes]
    else:
        folded = np.where(codes < 0x10000, table[codes & 0xFFFF], _EXPAND).astype(np.uint32)
    if int(folded.max()) < _EXPAND:
        return folded[folded != 0]
    if (folded == _SLOW).any():
        return np.frombuffer(_fold_slow(text).encode("utf-32-le"), dtype=np.uint32)
    pieces, last = [], 0
    for position in np.flatnonzero(folded == _EXPAND).tolist():
        expansion = _expansion(int(codes[position]))
        if expansion is None:  # outside the BMP and combining
            return np.frombuffer(_fold_slow(text).encode("utf-32-le"), dtype=np.uint32)
        pieces += [folded[last:position], expansion]
        last = position + 1
    pieces.append(folded[last:])
    joined = np.concatenate(pieces)
    return joined[joined != 0]


def strip_addresses(text: str) -> str:
    """Remove addresses written out in the text ("原文链接：https://…", "www.example.com/…"):
    a scheme and `://`, or `www.`, and the printable ASCII that follows. Written with
    str.find (a regular expression scanning 3,000 characters costs ~100 µs)."""
    spans = []
    for marker in ("://", "www.", "WWW."):
        start = text.find(marker)
        while start != -1:
            left = start
            if marker == "://":
                while left > 0 and text[left - 1] in _SCHEME_CHARS:
                    left -= 1
            right = start + len(marker)
            while right < len(text) and "!" <= text[right] <= "~":
                right += 1
            spans.append((left, right))
            start = text.find(marker, right)
    if not spans:
        return text
    spans.sort()
    out, position = [], 0
    for left, right in spans:
        if right <= position:
            continue
        out.append(text[position : max(left, position)])
        out.append(" ")
        position = right
    out.append(text[position:])
    return "".join(out)


def _fold_slow(text: str) -> str:
    text = unicodedata.normalize("NFKC", strip_addresses(text)).casefold()
    return "".join(c for c in text if c.isalnum())


def fold_text(text: str) -> str:
    """What is compared: NFKC (full-width letters, digits and punctuation become half-width,
    compatibility characters their plain form), case-folded, written-out addresses removed,
    then every character that is not a letter or a digit dropped (punctuation of either width,
    symbols, emoji, all whitespace). What remains is one run of letters and digits."""
    return _fold_codes(text).tobytes().decode("utf-32-le")


def shingle_hashes(folded: str | np.ndarray, k: int = SHINGLE_CHARS, seed: int = 0) -> np.ndarray:
    """64-bit hashes of every run of `k` consecutive characters of `folded`, vectorised: the
    code points as one array, a polynomial rolling hash built with k whole-array multiply-adds
    in uint64 (wrapping), the seed mixed in and MurmurHash3's 64-bit finalizer over it. One hash
    per position (repeats included; MinHash ignores them). Text shorter than `k` is one
    shingle."""
    if isinstance(folded, str):
        codes = np.frombuffer(folded.encode("utf-32-le"), dtype=np.uint32)
    else:
        codes = folded
    if codes.size == 0:
        return np.empty(0, dtype=np.uint64)
    if codes.size < k:
        k = int(codes.size)
    wide = codes.astype(np.uint64)
    count = wide.size - k + 1
    acc = wide[:count].copy()
    for offset in range(1, k):
        acc *= _MIX
        acc += wide[offset : offset + count]
    acc ^= np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
    shift, m1, m2 = _FMIX64
    acc ^= acc >> shift
    acc *= m1
    acc ^= acc >> shift
    acc *= m2
    acc ^= acc >> shift
    return acc


@lru_cache(maxsize=8)
def _probes(hashes: int, seed: int) -> np.ndarray:
    """For each bin, the order in which an empty bin looks at the others for a value to
    borrow: a fixed random permutation of the other bins per bin, the same in every process."""
    rng = np.random.default_rng(seed)
    table = np.empty((hashes, hashes - 1), dtype=np.intp)
    for bin_ in range(hashes):
        others = np.array([b for b in range(hashes) if b != bin_], dtype=np.intp)
        table[bin_] = rng.permutation(others)
    return table


@dataclass(frozen=True)
class Fingerprint:
    chars: int  # letters and digits in the folded text
    hashvalues: np.ndarray  # uint32 values, one per bin


class Fingerprinter:
    """Makes the one-permutation MinHash signature of an article body. Every process that shares
    an index must use the same `hashes`, `seed` and `shingle_chars` (the index stores them and
    refuses a mismatch)."""

    def __init__(
        self,
        hashes: int = DEFAULT_HASHES,
        seed: int = DEFAULT_SEED,
        shingle_chars: int = SHINGLE_CHARS,
    ):
        if not 2 <= hashes <= 1024 or shingle_chars < 1:
            raise ValueError("hashes must be 2-1024 and shingle_chars positive")
        self.hashes = hashes
        self.seed = seed
        self.shingle_chars = shingle_chars
        self._probes = _probes(hashes, seed)

    @property
    def spec(self) -> str:
        """How this fingerprinter makes signatures, as an index records it: signatures made with
        another seed or shingle length are not comparable."""
        return f"{SCHEME} seed={self.seed} shingles={self.shingle_chars}"

    def text(self, body_html: str) -> str:
        """The folded visible text of a body (what `signature` shingles)."""
        return fold_text(visible_text(body_html))

    def fingerprint(self, body_html: str) -> Fingerprint:
        """The folded text's length and its signature."""
        codes = _fold_codes(visible_text(body_html))
        return Fingerprint(int(codes.size), self.signature_of_text(codes))

    def signature_of_text(self, folded: str | np.ndarray) -> np.ndarray:
        """The signature (uint32, `hashes` values) of already folded text (a string or its code
        points): each bin's smallest shingle value, empty bins densified. An empty text has
        every bin empty (all 0xFFFFFFFF)."""
        values = shingle_hashes(folded, self.shingle_chars, self.seed)
        signature = np.full(self.hashes, _EMPTY, dtype=np.uint32)
        if values.size == 0:
            return signature
        # the top 32 bits pick the bin (multiply-shift: any number of bins), the low 32 bits
        # are the value; the finalizer leaves the two halves independent
        bins = (((values >> np.uint64(32)) * np.uint64(self.hashes)) >> np.uint64(32)).astype(
            np.intp
        )
        np.minimum.at(signature, bins, values.astype(np.uint32))
        filled = np.bincount(bins, minlength=self.hashes) > 0
        if not filled.all():
            for empty in np.flatnonzero(~filled).tolist():
                for other in self._probes[empty].tolist():
                    if filled[other]:
                        signature[empty] = signature[other]
                        break
        return signature

    def signature(self, body_html: str) -> np.ndarray:
        return self.fingerprint(body_html).hashvalues

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        """Estimated Jaccard similarity: the share of equal values."""
        return float(np.count_nonzero(a == b)) / float(a.size)
