"""all-MiniLM-L6-v2 in Flax against the PyTorch reference (transformers BertModel)."""

import numpy as np
import pytest

from _offline import fetched
from memr1_jax.memory import HashingTestEncoder

SENTENCES = [
    "Caroline went to the LGBTQ support group yesterday.",
    "Melanie painted a sunrise over the lake last year.",
    "John is a software engineer.", "Name is John.", "Loves cheese and chicken pizza.",
    "I really like cheese pizza", "User likes to play cricket", "Loves to play cricket with friends",
    "Dislikes cheese pizza", "The capital of France is Paris.", "", "a",
    "What did Caroline research?", "When did Melanie run a charity race?",
    "Hola, ¿cómo estás? Je suis très content.", "東京は日本の首都です。", "🙂🍕 emoji only 🚀",
    "Numbers 1234567890 and symbols #@$%^&*()", "UPPER CASE SHOUTING TEXT",
] + [f"On {d} May 2023, speaker {i} said they adopted a {pet} named {name}."
     for i, (d, pet, name) in enumerate(zip(range(1, 20), ["dog", "cat", "parrot"] * 7,
                                            ["Max", "Luna", "Oscar", "Bella"] * 5))]
SENTENCES += ["a very long sentence " * 40, "word " * 300]   # longer than 256 tokens: truncated
SENTENCES = SENTENCES[:50]
while len(SENTENCES) < 50:
    SENTENCES.append(f"filler sentence number {len(SENTENCES)} about hobbies and travel")


@pytest.fixture(scope="module")
def model_dir():
    from memr1_jax import assets
    return fetched(assets.fetch_tree, assets.MINILM_L6_V2)


@pytest.fixture(scope="module")
def encoder(model_dir):
    from memr1_jax.memory import load_minilm
    return load_minilm(model_dir, batch_size=32)


def torch_reference(model_dir, texts):
    import torch
    import transformers
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = transformers.BertModel.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        b = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        h = model(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).float()
        e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(e, dim=-1).numpy()


def _check_against_reference(model_dir, encoder, texts):
    ref = torch_reference(model_dir, texts)
    got = encoder(texts)
    assert got.shape == (len(texts), 384) and got.dtype == np.float32
    # Measured 2026-12-07: max |diff| 3e-7, 1 - cosine <= 1.2e-7 (float32 both sides). A cosine
    # bound of 0.999 (as before) would pass a wrong GELU or attention mask.
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    cos = np.sum(got * ref, axis=1)
    assert cos.min() >= 1 - 1e-6, (cos.min(), texts[int(cos.argmin())])
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_matches_pytorch_reference_short(model_dir, encoder):
    _check_against_reference(model_dir, encoder, SENTENCES[:12])


@pytest.mark.slow
def test_matches_pytorch_reference_50_sentences(model_dir, encoder):
    # 50 sentences incl. unicode, empty and >256-token inputs (compiles the 256 bucket).
    _check_against_reference(model_dir, encoder, SENTENCES)


def test_batching_and_buckets_do_not_change_embeddings(encoder):
    one_by_one = np.concatenate([encoder([s]) for s in SENTENCES[:6]])
    batched = encoder(SENTENCES[:6])
    np.testing.assert_allclose(one_by_one, batched, atol=2e-5)
    ids, mask = encoder.tokenize(["word " * 300])
    assert ids.shape == (1, 256) and mask.sum() == 256      # truncated to max_seq_length
    assert encoder([]).shape == (0, 384)


def test_semantic_sanity(encoder):
    e = encoder(["Loves cheese pizza", "Really likes cheese pizza", "The stock market fell sharply"])
    assert e[0] @ e[1] > 0.7 and e[0] @ e[2] < 0.3


def test_hashing_test_encoder_is_deterministic():
    enc = HashingTestEncoder(dim=32)
    a = enc(["likes pizza", "hates rain", "likes pizza"])
    np.testing.assert_array_equal(a[0], a[2])
    np.testing.assert_array_equal(enc(["hates rain"])[0], a[1])   # independent of batch position
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
