"""Metrics: Mem0 token F1 / BLEU-1, exact match, LoCoMo-official F1, aggregation."""

import math
import random

import nltk
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from memr1_jax.eval import metrics as M


# --------------------------------------------------------------------------- Mem0 token F1

@pytest.mark.parametrize("pred, gold, want", [
    ("Lisbon", "Lisbon", 1.0),
    ("lisbon.", "LISBON", 1.0),                       # case and '.' ignored
    ("Yes!", "yes", 1.0),                             # '!' ignored
    ("the the cat", "The cat", 1.0),                  # sets: {the, cat} == {the, cat}
    # {it's, lisbon} vs {lisbon}: P = 1/2, R = 1/1, F1 = 2*(1/2)*1/(1/2+1) = 2/3
    ("It's Lisbon.", "Lisbon", 2 / 3),
    # ':' stays attached: {answer:, lisbon} vs {lisbon} -> 2/3 as above
    ("Answer: Lisbon", "Lisbon", 2 / 3),
    # {in, lisbon, portugal} vs {lisbon}: P = 1/3, R = 1, F1 = 2*(1/3)/(4/3) = 1/2
    ("in Lisbon, Portugal", "Lisbon", 0.5),
    # {7, may, 2023} vs {may, 2023}: P = 2/3, R = 1, F1 = 2*(2/3)/(5/3) = 4/5
    ("7 May 2023", "May 2023", 0.8),
    ("2022", 2022, 1.0),                              # integer gold answers are str()-ed
    ("in 2022", 2022, 2 / 3),                         # {in, 2022} vs {2022}: P 1/2, R 1 -> 2/3
    ("", "Lisbon", 0.0),                              # empty prediction
    (None, "Lisbon", 0.0),
    ("...", "Lisbon", 0.0),                           # only stripped punctuation -> empty set
    ("Porto", "Lisbon", 0.0),
])
def test_token_f1_hand_values(pred, gold, want):
    assert M.token_f1(pred, gold) == pytest.approx(want, abs=1e-12)


# --------------------------------------------------------------------------- BLEU-1

@pytest.mark.parametrize("pred, gold, want", [
    ("Lisbon", "Lisbon", 1.0),
    # hyp [in, lisbon, ",", portugal] (4), ref [lisbon] (1): p1 = 1/4, c > r so BP = 1 -> 0.25
    ("in Lisbon, Portugal", "Lisbon", 0.25),
    # hyp [lisbon] (1), ref [lisbon, ",", portugal] (3): p1 = 1, BP = exp(1 - 3/1) = e^-2
    ("Lisbon", "Lisbon, Portugal", math.exp(-2)),
    # hyp [the, the, cat], ref [the, cat]: clipped matches 2 of 3, c > r -> 2/3
    ("the the cat", "The cat", 2 / 3),
    (2022, 2022, 1.0),                                # integer answers
    ("", "Lisbon", 0.0),                              # empty prediction
    ("Porto", "Lisbon", 0.0),                         # no unigram match
    # hyp [yes, !] (2), ref [yes] (1): p1 = 1/2, BP = 1 -> 0.5 ('!' is its own token)
    ("Yes!", "yes", 0.5),
])
def test_bleu1_hand_values(pred, gold, want):
    assert M.bleu1(pred, gold) == pytest.approx(want, abs=1e-12)


def _nltk_bleu1(hyp, ref):
    return sentence_bleu([ref], hyp, weights=(1, 0, 0, 0), smoothing_function=SmoothingFunction().method1)


@settings(max_examples=300, deadline=None)
@given(hyp=st.lists(st.sampled_from("a b c d e f the ,".split()), max_size=9),
       ref=st.lists(st.sampled_from("a b c d e f the ,".split()), min_size=1, max_size=9))
def test_bleu1_matches_nltk_sentence_bleu(hyp, ref):
    assert M.bleu1_tokens(hyp, ref) == pytest.approx(float(_nltk_bleu1(hyp, ref)), rel=1e-12, abs=1e-15)


def test_bleu1_matches_nltk_on_text():
    pairs = [("I moved to Lisbon last week.", "Lisbon"), ("The week before 9 June 2023", "the week before 9 June, 2023"),
             ("Caroline's friend, Mel", "Melanie"), ("Yes, she would.", "Likely yes")]
    for pred, gold in pairs:
        want = _nltk_bleu1(nltk.tokenize.NLTKWordTokenizer().tokenize(pred.lower()),
                           nltk.tokenize.NLTKWordTokenizer().tokenize(gold.lower()))
        assert M.bleu1(pred, gold) == pytest.approx(want, abs=1e-12)


# --------------------------------------------------------------------------- tokenizer

SINGLE_SENTENCES = [
    "Lisbon", "7 May 2023", "the week before 9 June, 2023", "Caroline's friend Mel", "She said \"hi\" (twice).",
    "Don't, won't, can't!", "3.5 hours", "U.S. citizens", "e-mail me at 10:30 a.m", "Pottery, camping, painting",
]


@pytest.mark.parametrize("text", SINGLE_SENTENCES)
def test_word_tokenize_equals_nltk_on_single_sentences(text):
    # preserve_line=True skips Punkt, so this runs without the punkt data.
    assert M.word_tokenize(text) == nltk.word_tokenize(text, preserve_line=True)


def test_word_tokenize_splits_sentences_and_keeps_abbreviations():
    tb = nltk.tokenize.NLTKWordTokenizer()
    text = "I moved to Lisbon. Dr. Silva helped me. It was great!"
    want = tb.tokenize("I moved to Lisbon.") + tb.tokenize("Dr. Silva helped me.") + tb.tokenize("It was great!")
    assert M.word_tokenize(text) == want
    assert "Lisbon" in want and "." in want and "Dr." in want


@pytest.fixture
def punkt():
    # NLTK's sentence model is data that nltk.download fetches from GitHub, not a package: a
    # machine that reaches only package registries (this one, CI) cannot have it. The stand-in
    # above is checked against NLTK's own tokenizer without it; this compares the whole path.
    if not nltk.tokenize.punkt_model_available("english"):
        pytest.skip("offline: NLTK punkt_tab english data not installed (nltk.download needs GitHub)")


def test_word_tokenize_equals_nltk_word_tokenize_with_punkt(punkt):
    for text in SINGLE_SENTENCES + ["I moved to Lisbon. Dr. Silva helped me. It was great!"]:
        assert M.word_tokenize(text) == nltk.word_tokenize(text)


# --------------------------------------------------------------------------- exact match

@pytest.mark.parametrize("pred, gold, want", [
    ("The Lisbon.", "lisbon", 1.0),                   # article, case, punctuation
    ("Lisbon, Portugal", "Lisbon Portugal", 1.0),
    ("  an   apple ", "Apple", 1.0),
    ("2022", 2022, 1.0),
    ("in 2022", 2022, 0.0),
    ("", "", 0.0),                                    # empty gold never matches
    ("", "Lisbon", 0.0),
    (None, "Lisbon", 0.0),
    ("Lisbon and Porto", "Lisbon Porto", 0.0),        # 'and' is not an article here
])
def test_exact_match(pred, gold, want):
    assert M.exact_match(pred, gold) == want


# --------------------------------------------------------------------------- LoCoMo official F1

@pytest.mark.parametrize("pred, gold, cat, want", [
    # The examples in memory-systems-and-locomo.md §3.4.
    ("May 7, 2023", "7 May 2023", 4, 1.0),            # multiset {may, 7, 2023} both sides
    # cat 1: preds ["May 7", "2023"], gold ["7 May 2023"]:
    # "May 7": P 2/2, R 2/3 -> 0.8; "2023": P 1, R 1/3 -> 0.5; max = 0.8
    ("May 7, 2023", "7 May 2023", 1, 0.8),
    # "the" removed: [sunset, paint] vs [sunset]: P 1/2, R 1 -> 2/3
    ("The sunset painting", "sunset", 4, 2 / 3),
    ("the Pride parade", "Pride parade", 2, 1.0),
    # [run, potteri] vs [potteri, camp, paint, swim]: P 1/2, R 1/4 -> 2*(1/8)/(3/4) = 1/3
    ("running, pottery", "Pottery, camping, painting, swimming", 4, 1 / 3),
    # cat 1: each gold part's best match: pottery 1, others 0 -> mean 1/4
    ("running, pottery", "Pottery, camping, painting, swimming", 1, 0.25),
    # cat 3 cuts the gold at ';' -> "Likely yes"; Porter stems likely->like, yes->ye:
    # [ye] vs [like, ye]: P 1, R 1/2 -> 2*(1/2)/(3/2) = 2/3
    ("yes", "Likely yes; she loves it", 3, 2 / 3),
    ("painted", "painting", 4, 1.0),                  # Porter: paint == paint
    ("", "Lisbon", 4, 0.0),
    ("2022", 2022, 2, 1.0),
])
def test_locomo_f1(pred, gold, cat, want):
    assert M.locomo_f1(pred, gold, cat) == pytest.approx(want, abs=1e-12)


def test_locomo_f1_rejects_adversarial():
    with pytest.raises(ValueError, match="categories 1-4"):
        M.locomo_f1("x", "y", 5)


def test_score_answer_keys():
    s = M.score_answer("Lisbon", "Lisbon", 4)
    assert s == {"f1": 1.0, "b1": 1.0, "em": 1.0, "locomo_f1": 1.0}


def test_tokenizers_and_normalisers_by_hand():
    assert M.simple_tokenize("Hi, THERE? yes!  no.") == ["hi", "there", "yes", "no"]
    assert M.normalize_answer("The  Cat, sat!") == "cat sat"
    assert M.locomo_normalize("Cats, and the dogs!") == "cats dogs"


def test_a_missing_answer_scores_zero_even_against_the_word_none():
    for fn in (M.token_f1, M.bleu1, M.exact_match):
        assert fn(None, "None") == 0.0 and fn("None", None) == 0.0 and fn(None, "x") == 0.0, fn
    assert M.locomo_f1(None, "None", 2) == 0.0 and M.locomo_f1(None, "XXXX", 4) == 0.0
    assert M.score_answer("Lisbon", "Lisbon", 0) == {"f1": 1.0, "b1": 1.0, "em": 1.0, "locomo_f1": None}


# --------------------------------------------------------------------------- aggregation

def test_aggregate_per_category_and_overall():
    recs = [
        {"category": 1, "f1": 1.0, "b1": 0.5, "em": 1.0},
        {"category": 1, "f1": 0.0, "b1": 0.0, "em": 0.0},
        {"category": 4, "f1": 0.5, "b1": 0.25, "em": 0.0},
        {"category": 5, "f1": 1.0, "b1": 1.0, "em": 1.0},          # adversarial: skipped
    ]
    agg = M.aggregate(recs)
    assert list(agg) == ["single-hop", "open-domain", "overall"]
    assert agg["single-hop"] == {"category": 1, "count": 2, "f1": 0.5, "b1": 0.25, "em": 0.5,
                                 "locomo_f1": None, "j": None}
    # overall is question-weighted: f1 = (1 + 0 + 0.5) / 3 = 0.5, b1 = 0.75 / 3 = 0.25, em = 1/3
    assert agg["overall"]["count"] == 3
    assert agg["overall"]["f1"] == pytest.approx(0.5)
    assert agg["overall"]["b1"] == pytest.approx(0.25)
    assert agg["overall"]["em"] == pytest.approx(1 / 3)
    assert agg["overall"]["j"] is None
    assert "n/a" in M.format_table(agg)
    assert M.aggregate(recs, naming="locomo")["multi-hop"]["count"] == 2


def test_aggregate_with_judge_scores():
    recs = [{"category": 2, "f1": 1, "b1": 1, "em": 1, "j": 1.0},
            {"category": 2, "f1": 0, "b1": 0, "em": 0, "j": 0.0},
            {"category": 3, "f1": 0, "b1": 0, "em": 0, "j": 1.0}]
    agg = M.aggregate(recs)
    assert agg["temporal"]["j"] == 0.5 and agg["multi-hop"]["j"] == 1.0
    assert agg["overall"]["j"] == pytest.approx(2 / 3)               # (1 + 0 + 1) / 3


def test_aggregate_orders_and_averages_every_kind_of_record():
    """LoCoMo categories by number, then other data's types in LongMemEval's order, then unknown
    types as they first appear; adversarial skipped wherever it comes; optional scores averaged over
    the records that have them. Expected values worked out by hand."""
    def rec(cat, f1, label=None, lf=None, j=None):
        r = {"category": cat, "f1": f1, "b1": f1 / 2, "em": float(f1 == 1.0), "locomo_f1": lf, "j": j}
        return r if label is None else {**r, "label": label}
    recs = [rec(5, 1.0), rec(3, 0.5, lf=0.25), rec(0, 1.0, "zeta"), rec(0, 0.0), rec(0, 0.5, "knowledge-update"),
            rec(1, 1.0, lf=1.0, j=1), rec(1, 0.0, j=0), rec(0, 0.25, "single-session-user"), rec(0, 0.5, "zeta"),
            rec(5, 0.0)]
    agg = M.aggregate(recs)
    assert list(agg) == ["single-hop", "multi-hop", "single-session-user", "knowledge-update", "zeta", "question",
                         "overall"]
    row = lambda cat, n, f1, em, lf=None, j=None: {"category": cat, "count": n, "f1": f1, "b1": f1 / 2,  # noqa: E731
                                                  "em": em, "locomo_f1": lf, "j": j}
    assert agg["single-hop"] == row(1, 2, 0.5, 0.5, lf=1.0, j=0.5)
    assert agg["multi-hop"] == row(3, 1, 0.5, 0.0, lf=0.25)
    assert agg["single-session-user"] == row(0, 1, 0.25, 0.0)
    assert agg["knowledge-update"] == row(0, 1, 0.5, 0.0)
    assert agg["zeta"] == row(0, 2, 0.75, 0.5)
    assert agg["question"] == row(0, 1, 0.0, 0.0)
    assert agg["overall"] == row(None, 8, 3.75 / 8, 0.25, lf=0.625, j=0.5)


def test_format_table_by_hand():
    agg = {"single-hop": {"category": 1, "count": 2, "f1": 0.5, "b1": 0.125, "em": 0.5, "locomo_f1": None, "j": 1.0},
           "dmr": {"category": 0, "count": 1, "f1": 0.03125, "b1": 0.0, "em": 0.0, "locomo_f1": None, "j": None},
           "overall": {"category": None, "count": 3, "f1": 1 / 3, "b1": 0.25, "em": 1.0, "locomo_f1": 0.5, "j": None}}
    assert M.format_table(agg).split("\n") == [
        "category             n      F1      B1      EM  LoCoMo-F1       J",
        "1 single-hop         2   50.00   12.50   50.00        n/a  100.00",
        "dmr                  1    3.12    0.00    0.00        n/a     n/a",
        "overall              3   33.33   25.00  100.00      50.00     n/a"]


def test_judge_agreement_by_hand():
    assert M._kappa([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(0.5)   # po .75, pe .5*.25 + .5*.75 = .5
    assert M._kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    assert M._kappa([1, 1, 1], [1, 1, 1]) is None                        # chance agreement is total
    recs = [{"category": 1, "j": 1, "em": 1.0, "f1": 1.0}, {"category": 2, "j": 1, "em": 0.0, "f1": 0.6},
            {"category": 4, "j": 0, "em": 0.0, "f1": 0.5}, {"category": 4, "j": 0, "em": 0.0, "f1": 0.0},
            {"category": 5, "j": 1, "em": 0.0, "f1": 0.0}, {"category": 1, "j": None, "em": 1.0, "f1": 1.0}]
    got = M.judge_agreement(recs)
    assert got["n"] == 4 and got["judge_positive"] == 0.5
    # EM labels 1 0 0 0 against the judge's 1 1 0 0: po .75, kappa .5
    assert got["em"] == {"agreement": 0.75, "kappa": pytest.approx(0.5), "positive": 0.25}
    # F1 >= 0.5 labels 1 1 1 0: po .75, pe .5*.75 + .5*.25 = .5, kappa .5
    assert got["f1>=0.5"] == {"agreement": 0.75, "kappa": pytest.approx(0.5), "positive": 0.75}
    assert set(M.judge_agreement(recs, f1_threshold=0.55)) == {"n", "judge_positive", "em", "f1>=0.55"}
    assert M.judge_agreement(recs, f1_threshold=0.55)["f1>=0.55"]["positive"] == 0.5
    assert M.judge_agreement([{"category": 5, "j": 1, "em": 1, "f1": 1}, {"category": 1, "em": 1, "f1": 1}]) == {"n": 0}


def test_aggregate_bad_records():
    with pytest.raises(ValueError, match="record 0: needs an integer 'category'"):
        M.aggregate([{"f1": 1}])
    with pytest.raises(ValueError, match="record 1: needs an integer 'category', got 'x'"):
        M.aggregate([{"category": 1, "f1": 1, "b1": 1, "em": 1}, {"category": "x"}])
    with pytest.raises(ValueError, match="record 0: missing score 'b1'"):
        M.aggregate([{"category": 1, "f1": 1, "em": 0}])


def test_metrics_bounded_on_random_text():
    rng = random.Random(0)
    words = "Lisbon lisbon. the a May 7, 2023 yes no ! ? Porto cat's".split()
    for _ in range(200):
        p = " ".join(rng.choice(words) for _ in range(rng.randrange(0, 6)))
        g = " ".join(rng.choice(words) for _ in range(rng.randrange(1, 6)))
        for v in (M.token_f1(p, g), M.bleu1(p, g), M.exact_match(p, g), M.locomo_f1(p, g, rng.randrange(1, 5))):
            assert 0.0 <= v <= 1.0


def test_paired_bootstrap_interval_matches_the_normal_approximation():
    import numpy as np

    from memr1_jax.eval.metrics import paired_bootstrap
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 3.0, 500), rng.normal(0.0, 3.0, 500)
    r = paired_bootstrap(a, b, resamples=20_000)
    d = a - b
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))        # independent reference: CLT interval
    assert r["mean"] == pytest.approx(d.mean())
    # 4% of the half-width is ~4 Monte Carlo standard errors of a 2.5% quantile over 20,000 resamples;
    # a tail at 1/3 of 5% instead of 1/2 (z = 2.13) is 9% off
    assert r["lo"] == pytest.approx(d.mean() - half, abs=0.04 * half)
    assert r["hi"] == pytest.approx(d.mean() + half, abs=0.04 * half)
    half50 = 0.6745 * d.std(ddof=1) / np.sqrt(len(d))
    r50 = paired_bootstrap(a, b, resamples=20_000, level=0.5)
    assert (r50["lo"], r50["hi"]) == pytest.approx((d.mean() - half50, d.mean() + half50), abs=0.06 * half50)
    assert r["p_a_better"] == 1.0 and r["wins"] + r["losses"] == 500
    same = paired_bootstrap([0.5, 0.2], [0.5, 0.2])
    assert (same["lo"], same["hi"], same["wins"], same["losses"]) == (0.0, 0.0, 0, 0)
    with pytest.raises(ValueError, match="non-empty"):
        paired_bootstrap([], [])


def test_paired_bootstrap_edges_and_reproducibility():
    from memr1_jax.eval.metrics import paired_bootstrap
    one = paired_bootstrap([1.0], [0.25])
    assert one == {"n": 1, "mean": 0.75, "lo": 0.75, "hi": 0.75, "p_a_better": 1.0, "wins": 1, "losses": 0}
    # a tie is not a win: no resample of all-equal scores favours a
    assert paired_bootstrap([0.5] * 9, [0.5] * 9)["p_a_better"] == 0.0
    # the intervals a README reports are reproduced by the defaults (10,000 resamples, seed 0)
    a, b = [0.1, 0.9, 0.4, 0.0, 1.0, 0.3], [0.2, 0.5, 0.4, 0.1, 0.0, 0.6]
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b, resamples=10_000, seed=0) == paired_bootstrap(a, b)
    assert paired_bootstrap(a, b) != paired_bootstrap(a, b, seed=1)


def test_compare_cli_pairs_runs_by_question(tmp_path, capsys):
    import json

    from memr1_jax.compare import main
    for name, f1s in (("a", [1.0, 0.5, 0.0]), ("b", [0.0, 0.5, 0.0, 1.0])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "predictions.jsonl").write_text("".join(
            json.dumps({"key": f"c:{i}", "f1": f, "b1": f, "em": 0.0}) + "\n" for i, f in enumerate(f1s)))
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    assert "| b | 3 | +33.33 [" in row and row.endswith("| 1 / 0 |")
    assert main([str(tmp_path / "a"), str(tmp_path / "nope")]) == 2


def test_compare_validation_pairs_each_step_with_step_zero(tmp_path, capsys):
    import json

    from memr1_jax.compare import main
    from memr1_jax.eval.metrics import paired_bootstrap
    rows = [{"step": 0, "n": 3, "f1_per_item": [0.0, 0.5, 0.0]},
            {"step": 5, "n": 3, "f1_per_item": [1.0, 0.5, 0.5], "gold_per_item": [1.0, 0.5, 0.0]},
            {"step": 5, "n": 3, "f1_per_item": [1.0, 1.0, 0.5]}]             # a rerun's row replaces the first
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["--validation", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    d = paired_bootstrap([100.0, 100.0, 50.0], [0.0, 50.0, 0.0])
    assert out[-1] == f"| 5 | 3 | 83.33 ({d['mean']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}]) |"   # no gold left
    assert out[-2].startswith("| 0 | 3 | 16.67 |")
    (tmp_path / "validation.jsonl").write_text("not json\n")
    assert main(["--validation", str(tmp_path)]) == 2
