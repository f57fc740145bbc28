"""Answer-quality metrics for LoCoMo-style QA.

* :func:`token_f1` and :func:`bleu1`: exactly the Mem0 evaluation code
  (``evaluation/metrics/utils.py`` at mem0ai/mem0@b3ede5b7, borrowed from
  A-Mem), which is what Memory-R1-style tables (F1 / B1 / J) report.
  F1 is over *sets* of lowercased tokens with only ``. , ! ?`` turned into
  spaces; BLEU-1 is NLTK ``sentence_bleu`` with weights (1, 0, 0, 0) and
  ``SmoothingFunction().method1`` over ``nltk.word_tokenize`` tokens.
* :func:`exact_match`: SQuAD-style normalised string equality.
* :func:`locomo_f1`: the LoCoMo-official F1 (normalise, Porter-stem, multiset
  overlap; category 1 splits on commas; category 3 cuts the gold at ``;``).
  Not comparable with :func:`token_f1`; reported as an extra column.

Tokenizer choice for BLEU-1. Mem0 calls ``nltk.word_tokenize``, which first
splits sentences with the Punkt *english* model (``punkt_tab`` data, fetched
from the network by ``nltk.download``) and then runs NLTK's improved Treebank
tokenizer on each sentence. That data cannot be fetched here, so
:func:`word_tokenize` uses the same Treebank tokenizer (``NLTKWordTokenizer``)
and NLTK's Punkt algorithm with parameters built in code: no learned
collocations or sentence starters, and a short list of common English
abbreviations (:data:`ABBREVIATIONS`). Token output is identical to
``nltk.word_tokenize`` for any single-sentence text (every LoCoMo gold answer,
and short predictions); it can differ only where text has several sentences
and an abbreviation or initial the English model knows but the list lacks.
BLEU-1 itself is computed here in closed form (brevity penalty x clipped
unigram precision, which is what ``sentence_bleu`` reduces to for these
weights) and tested against ``nltk.translate.bleu_score``.
"""

from __future__ import annotations

import functools
import math
import re
import string
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

# Map category numbers to labels without importing the data package's I/O code.
from memr1_jax.data.locomo import ADVERSARIAL, OTHER, PAPER_CATEGORIES, category_label

# ----------------------------------------------------------------------------- Mem0 / A-Mem F1


def simple_tokenize(text: Any) -> list[str]:
    """Mem0's tokenizer for F1: lowercase, ``. , ! ?`` -> space, split on whitespace."""
    text = str(text)
    return text.lower().replace(".", " ").replace(",", " ").replace("!", " ").replace("?", " ").split()


def token_f1(prediction: Any, gold: Any) -> float:
    """Mem0 token F1: set overlap of :func:`simple_tokenize` tokens.

    Follows Mem0's ``calculate_metrics``: an empty/None prediction or gold
    scores 0; non-strings (integer gold answers) are ``str()``-ed and stripped.
    """
    if prediction is None or gold is None:
        return 0.0
    prediction, gold = str(prediction), str(gold)
    if not prediction or not gold:
        return 0.0
    pred = set(simple_tokenize(prediction.strip()))
    ref = set(simple_tokenize(gold.strip()))
    if not pred or not ref:
        return 0.0
    common = len(pred & ref)
    if common == 0:
        return 0.0
    p, r = common / len(pred), common / len(ref)
    return 2 * p * r / (p + r)


# ----------------------------------------------------------------------------- BLEU-1

# Common English abbreviations (lowercase, without the final period) so that
# "Dr. Smith" does not end a sentence; see the module docstring.
ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "inc", "ltd", "co", "corp",
    "mt", "ft", "no", "vol", "e.g", "i.e", "u.s", "u.k", "a.m", "p.m", "jan", "feb", "mar", "apr",
    "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "gen", "gov", "sen", "rep", "rev",
})


@functools.lru_cache(maxsize=1)
def _tokenizers():
    from nltk.tokenize.destructive import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
    params = PunktParameters()
    params.abbrev_types = set(ABBREVIATIONS)
    return PunktSentenceTokenizer(params), NLTKWordTokenizer()


def word_tokenize(text: str) -> list[str]:
    """Offline stand-in for ``nltk.word_tokenize(text)`` (see the module docstring)."""
    sent_tok, word_tok = _tokenizers()
    return [tok for sent in sent_tok.tokenize(text) for tok in word_tok.tokenize(sent)]


def bleu1_tokens(hypothesis: list[str], reference: list[str]) -> float:
    """``sentence_bleu([reference], hypothesis, weights=(1,0,0,0), smoothing_function=method1)``.

    With those weights the score is BP * p1: p1 = clipped unigram matches /
    len(hypothesis), BP = 1 if len(hyp) > len(ref) else exp(1 - len(ref)/len(hyp)).
    NLTK returns 0 when no unigram matches (including an empty hypothesis).
    """
    if not hypothesis:
        return 0.0
    ref_counts = Counter(reference)
    matches = sum(min(c, ref_counts[w]) for w, c in Counter(hypothesis).items())
    if matches == 0:
        return 0.0
    c, r = len(hypothesis), len(reference)
    bp = 1.0 if c > r else math.exp(1 - r / c)
    return bp * matches / c


def bleu1(prediction: Any, gold: Any) -> float:
    """Mem0 BLEU-1: lowercased, word-tokenized prediction vs. gold."""
    if prediction is None or gold is None:
        return 0.0
    return bleu1_tokens(word_tokenize(str(prediction).lower()), word_tokenize(str(gold).lower()))


# ----------------------------------------------------------------------------- exact match

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: Any) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and articles, collapse whitespace."""
    text = str(text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: Any, gold: Any) -> float:
    """1.0 if the normalised strings are equal (and non-empty), else 0.0."""
    if prediction is None or gold is None:
        return 0.0
    p, g = normalize_answer(prediction), normalize_answer(gold)
    return float(bool(g) and p == g)


# ----------------------------------------------------------------------------- LoCoMo-official F1

_LOCOMO_ARTICLES = re.compile(r"\b(a|an|the|and)\b")


def locomo_normalize(text: Any) -> str:
    """LoCoMo ``normalize_answer``: drop commas, lowercase, drop punctuation, a/an/the/and, spaces."""
    text = str(text).replace(",", "").lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _LOCOMO_ARTICLES.sub(" ", text)
    return " ".join(text.split())


@functools.lru_cache(maxsize=1)
def _stemmer():
    from nltk.stem import PorterStemmer
    return PorterStemmer()


def _stem_tokens(text: Any) -> list[str]:
    stem = _stemmer().stem
    return [stem(w) for w in locomo_normalize(text).split()]


def locomo_f1_single(prediction: Any, gold: Any) -> float:
    """LoCoMo ``f1_score``: Porter-stemmed multiset overlap of normalised tokens."""
    pred, ref = _stem_tokens(prediction), _stem_tokens(gold)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    p, r = common / len(pred), common / len(ref)
    return 2 * p * r / (p + r)


def locomo_f1(prediction: Any, gold: Any, category: int) -> float:
    """LoCoMo-official QA F1 for categories 1-4.

    Category 1: split raw prediction and gold on commas; for each gold part take
    the best part-F1 over prediction parts; average over gold parts.
    Category 3: gold cut at the first ``;``. Categories 2 and 4: plain.
    """
    if prediction is None:
        prediction = ""
    prediction, gold = str(prediction), str(gold)
    if category == 1:
        preds = [p.strip() for p in prediction.split(",")]
        golds = [g.strip() for g in gold.split(",")]
        return sum(max(locomo_f1_single(p, g) for p in preds) for g in golds) / len(golds)
    if category == 3:
        gold = gold.split(";")[0].strip()
    if category in (2, 3, 4):
        return locomo_f1_single(prediction, gold)
    raise ValueError(f"locomo_f1 handles categories 1-4, got {category!r} (the adversarial rule is not implemented)")


# ----------------------------------------------------------------------------- per question and aggregation


def score_answer(prediction: Any, gold: Any, category: int) -> dict[str, float | None]:
    """All automatic metrics for one answer: f1, b1, em, locomo_f1 (None for questions
    without a LoCoMo category: its rules are per category)."""
    return {"f1": token_f1(prediction, gold), "b1": bleu1(prediction, gold),
            "em": exact_match(prediction, gold),
            "locomo_f1": locomo_f1(prediction, gold, category) if category in PAPER_CATEGORIES else None}


# LongMemEval's question types in the order of the Memory-R1 paper's Table 4 (its "OD" column
# is single-session-assistant), then MSC's one type.
TYPE_ORDER = ("single-session-user", "single-session-preference", "single-session-assistant", "multi-session",
              "knowledge-update", "temporal-reasoning", "dmr")


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def aggregate(records: Iterable[Mapping[str, Any]], naming: str = "paper") -> dict[str, dict[str, Any]]:
    """Per-category and overall means.

    Each record needs ``category`` (LoCoMo number; 0 for other data, grouped by the
    record's ``label``, e.g. LongMemEval's question type) and the scores ``f1``,
    ``b1``, ``em`` (``locomo_f1`` and a judge score ``j`` are optional; a record
    without ``j`` or with ``j=None`` has no judge score). Category-5 records are
    skipped, as Mem0 does. Returns ``{label: {category, count, f1, b1, em,
    locomo_f1, j}}`` with labels in the given naming ("paper" = Mem0/Memory-R1),
    ordered by category number (other types: LongMemEval's order, then as they come),
    plus ``"overall"`` (question-weighted, i.e. a micro average). ``j`` is None
    ("n/a") where no judge scores exist; otherwise it is the mean over the records
    that have one, 1 for CORRECT and 0 otherwise, as Mem0's evaluation computes it.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    labels: dict[tuple, str] = {}
    seen: dict[str, int] = {}   # other types in the order they first appear
    for i, rec in enumerate(records):
        try:
            cat = int(rec["category"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"record {i}: needs an integer 'category', got {rec.get('category')!r}") from e
        if cat == ADVERSARIAL:
            continue
        for key in ("f1", "b1", "em"):
            if key not in rec:
                raise ValueError(f"record {i}: missing score {key!r}")
        if cat == OTHER:
            label = str(rec.get("label") or category_label(OTHER))
            rank = TYPE_ORDER.index(label) if label in TYPE_ORDER else len(TYPE_ORDER)
            key = (1, rank, seen.setdefault(label, len(seen)))
        else:
            label, key = category_label(cat, naming), (0, cat, 0)
        labels.setdefault(key, label)
        groups.setdefault(key, []).append(rec)

    def summarise(recs: list[Mapping[str, Any]]) -> dict[str, Any]:
        js = [float(r["j"]) for r in recs if r.get("j") is not None]
        lf = [float(r["locomo_f1"]) for r in recs if r.get("locomo_f1") is not None]
        return {"count": len(recs),
                "f1": _mean([float(r["f1"]) for r in recs]),
                "b1": _mean([float(r["b1"]) for r in recs]),
                "em": _mean([float(r["em"]) for r in recs]),
                "locomo_f1": _mean(lf),
                "j": _mean(js)}

    out: dict[str, dict[str, Any]] = {}
    for key in sorted(groups):
        out[labels[key]] = {"category": key[1] if key[0] == 0 else 0, **summarise(groups[key])}
    out["overall"] = {"category": None, **summarise([r for k in sorted(groups) for r in groups[k]])}
    return out


def _kappa(a: list[int], b: list[int]) -> float | None:
    """Cohen's kappa of two 0/1 labelings (None when chance agreement is total)."""
    n = len(a)
    po = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    return None if pe == 1 else (po - pe) / (1 - pe)


def judge_agreement(records: Iterable[Mapping[str, Any]], f1_threshold: float = 0.5) -> dict[str, Any]:
    """How the judge's labels agree with the automatic metrics on the judged records
    (category 5 skipped): the share of equal labels and Cohen's kappa against EM and
    against ``F1 >= f1_threshold``, with the judge's and each metric's positive rate."""
    recs = [r for r in records if r.get("j") is not None and int(r["category"]) != ADVERSARIAL]
    if not recs:
        return {"n": 0}
    j = [int(r["j"]) for r in recs]
    out: dict[str, Any] = {"n": len(recs), "judge_positive": sum(j) / len(j)}
    for name, labels in (("em", [int(float(r["em"]) >= 1.0) for r in recs]),
                         (f"f1>={f1_threshold:g}", [int(float(r["f1"]) >= f1_threshold) for r in recs])):
        out[name] = {"agreement": sum(x == y for x, y in zip(j, labels)) / len(j),
                     "kappa": _kappa(j, labels), "positive": sum(labels) / len(labels)}
    return out


def format_table(agg: Mapping[str, Mapping[str, Any]]) -> str:
    """Plain-text table of :func:`aggregate` output (scores x100, "n/a" for missing)."""
    def fmt(v):
        return "n/a" if v is None else f"{100 * v:.2f}"
    lines = [f"{'category':<16}{'n':>6}{'F1':>8}{'B1':>8}{'EM':>8}{'LoCoMo-F1':>11}{'J':>8}"]
    for label, row in agg.items():
        name = f"{row['category']} {label}" if row.get("category") else label
        lines.append(f"{name:<16}{row['count']:>6}{fmt(row['f1']):>8}{fmt(row['b1']):>8}"
                     f"{fmt(row['em']):>8}{fmt(row.get('locomo_f1')):>11}{fmt(row.get('j')):>8}")
    return "\n".join(lines)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """Mean of ``a - b`` over paired per-question scores, with the percentile bootstrap interval
    (questions resampled with replacement) and the share of resamples where ``a`` wins."""
    import numpy as np
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if d.ndim != 1 or not len(d):
        raise ValueError(f"paired_bootstrap: need two equally long, non-empty score lists, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (resamples, len(d)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"n": int(len(d)), "mean": float(d.mean()), "lo": float(lo), "hi": float(hi),
            "p_a_better": float((means > 0).mean()), "wins": int((d > 0).sum()), "losses": int((d < 0).sum())}
