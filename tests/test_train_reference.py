"""The small reference-model trainer: the split, that training learns real text, the saved checkpoint,
that real text scores lower perplexity than junk made from it, and determinism.

The corpus is Python's own documentation (pydoc_data.topics, always installed), cut into ~1,500-character
documents. One tiny model is trained once for the module (single thread: robust on a busy 2-core box).
"""
from __future__ import annotations

import json
import math
import random

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pydantic import ValidationError  # noqa: E402

from pipeline.config import ReferenceConfig  # noqa: E402
from pipeline.hashing import reference_split_key  # noqa: E402
from pipeline.train.reference import (  # noqa: E402
    encode_documents,
    lr_at,
    mean_token_nll,
    pack_sequences,
    split_reference,
    train_reference,
    train_tokenizer,
)

TINY = dict(vocab_size=512, hidden_size=64, num_heads=2, num_layers=2, intermediate_size=256,
            max_seq_len=128, batch_size=8, lr=3e-3, warmup_steps=10, max_steps=120, eval_every=20,
            heldout_fraction=0.05, num_threads=1, seed=7)


def _pydoc_documents(max_chars: int = 1500) -> list[str]:
    from pydoc_data.topics import topics

    docs = []
    for key in sorted(topics):
        current = ""
        for paragraph in topics[key].split("\n\n"):
            current += paragraph + "\n\n"
            if len(current) > max_chars:
                docs.append(current)
                current = ""
        if current.strip():
            docs.append(current)
    return docs


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Evaluation here is tiny: one thread beats two on a 2-core machine other processes share."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return _pydoc_documents()


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("reference")
    calls = []
    summary = train_reference(corpus, out_dir, ReferenceConfig(**TINY),
                              progress=lambda *args: calls.append(args))
    return summary, out_dir, calls


# ---------------------------------------------------------------------------------------------------
# the split
def test_split_reference_is_deterministic_order_independent_and_sized():
    rng = random.Random(0)
    ids = [f"{rng.getrandbits(128):032x}" for _ in range(10_000)]
    fraction = 0.1
    chosen = split_reference(ids, fraction, seed=3)
    assert chosen == split_reference(list(reversed(ids)), fraction, seed=3)
    assert chosen == split_reference(rng.sample(ids, len(ids)), fraction, seed=3)
    # per-document stability: a document's side does not depend on the other documents
    assert split_reference(ids[:5000], fraction, seed=3) == chosen & set(ids[:5000])
    # size ~ Binomial(n, p): within 5 standard deviations
    n = len(ids)
    sd = math.sqrt(n * fraction * (1 - fraction))
    assert abs(len(chosen) - n * fraction) < 5 * sd
    # another seed gives another split of the same size
    other = split_reference(ids, fraction, seed=4)
    assert other != chosen and abs(len(other) - n * fraction) < 5 * sd
    # min_docs raises the threshold, keeping the plain split as a subset
    at_least = split_reference(ids, fraction, seed=3, min_docs=2000)
    assert len(at_least) == 2000 and chosen <= at_least
    assert split_reference(ids[:10], 0.1, seed=3, min_docs=1000) == set(ids[:10])
    # ... but never past max_fraction of the store: 1,051 documents give 262, not 1,000
    small = ids[:1051]
    capped = split_reference(small, fraction, seed=3, min_docs=1000, max_fraction=0.25)
    assert len(capped) == 262 and split_reference(small, fraction, seed=3) <= capped
    assert capped == set(sorted(small, key=lambda d: reference_split_key(d, 3))[:262])  # the 262 smallest keys
    assert len(split_reference(ids, fraction, seed=3, min_docs=2000, max_fraction=0.25)) == 2000
    # the row-by-row rule a Spark task can apply
    assert chosen == {d for d in ids if reference_split_key(d, 3) < fraction}


def test_config_rejects_small_heads_and_lr_schedule_shape():
    with pytest.raises(ValidationError, match="head_dim"):
        ReferenceConfig(hidden_size=64, num_heads=4)
    config = ReferenceConfig(lr=1.0, min_lr_ratio=0.1, warmup_steps=10)
    lrs = [lr_at(s, 100, config) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1) and all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


def test_tokenizer_is_byte_level_with_bos(corpus, tmp_path):
    tokenizer = train_tokenizer(corpus[:50], vocab_size=400)
    assert len(tokenizer) <= 400
    ids = tokenizer("déjà vu ✓ 🙂")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "déjà vu ✓ 🙂"  # no unknown tokens
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").exists() and (tmp_path / "tokenizer_config.json").exists()


# ---------------------------------------------------------------------------------------------------
# training
def test_training_learns_and_checkpoint_reloads(trained, corpus):
    summary, out_dir, calls = trained
    vocab = len(transformers.AutoTokenizer.from_pretrained(out_dir))
    assert summary["initial_heldout_loss"] == pytest.approx(math.log(vocab), rel=0.05)  # ~uniform at init
    assert summary["final_heldout_loss"] < 0.8 * math.log(vocab)
    assert summary["final_heldout_loss"] < summary["initial_heldout_loss"] - 1.0
    assert summary["steps"] == TINY["max_steps"] and summary["params"] > 0

    # progress: step 0 with the initial held-out loss, then every step; held-out every eval_every steps
    assert calls[0] == (0, 120, None, summary["initial_heldout_loss"])
    assert [c[0] for c in calls] == list(range(121))
    assert [c[0] for c in calls if c[3] is not None] == [0, 20, 40, 60, 80, 100, 120]
    assert calls[-1][3] == summary["final_heldout_loss"]

    # a standard HF Llama directory ...
    config = json.loads((out_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert config["head_dim"] >= 32 and config["tie_word_embeddings"] is True
    assert config["max_position_embeddings"] == TINY["max_seq_len"]
    assert (out_dir / "model.safetensors").exists()
    record = json.loads((out_dir / "curate_model.json").read_text())
    assert record["kind"] == "trained_reference" and record["seed"] == TINY["seed"]
    assert record["config"]["hidden_size"] == 64 and record["final_heldout_loss"] == summary["final_heldout_loss"]

    # ... that reloads and gives the in-memory model's held-out loss on the same held-out rows
    model = transformers.AutoModelForCausalLM.from_pretrained(out_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out_dir)
    heldout = [corpus[i] for i in summary["heldout_doc_indexes"]]
    assert tokenizer(heldout[0])["input_ids"][0] == tokenizer.bos_token_id
    rows = pack_sequences(encode_documents(tokenizer, heldout), TINY["max_seq_len"])
    rows = rows[: ReferenceConfig(**TINY).eval_max_rows]  # the rows training evaluated
    reloaded = mean_token_nll(model, rows, batch_size=8)
    assert reloaded == pytest.approx(summary["final_heldout_loss"], rel=1e-5)


def _doc_nll(model, tokenizer, text: str, max_tokens: int) -> float:
    ids = tokenizer(text, return_tensors="pt")["input_ids"][:, :max_tokens]
    return mean_token_nll(model, ids, batch_size=1)


def test_real_text_has_lower_perplexity_than_junk(trained, corpus):
    summary, out_dir, _ = trained
    model = transformers.AutoModelForCausalLM.from_pretrained(out_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out_dir)
    rng = random.Random(0)
    real, shuffled, noise = [], [], []
    for i in summary["heldout_doc_indexes"]:
        text = corpus[i]
        words = text.split()
        rng.shuffle(words)
        chars = list(text.replace("\n", " "))
        junk = "".join(rng.choice(chars) for _ in range(len(text)))
        real.append(_doc_nll(model, tokenizer, text, TINY["max_seq_len"]))
        shuffled.append(_doc_nll(model, tokenizer, " ".join(words), TINY["max_seq_len"]))
        noise.append(_doc_nll(model, tokenizer, junk, TINY["max_seq_len"]))
    n = len(real)
    print(f"mean NLL real {sum(real) / n:.3f} shuffled {sum(shuffled) / n:.3f} noise {sum(noise) / n:.3f}")
    assert n >= 10
    # perplexity = exp(mean NLL): real < shuffled words < random characters, on average and per document
    assert sum(real) / n < sum(shuffled) / n - 0.2
    assert sum(shuffled) / n < sum(noise) / n
    assert sum(r < s for r, s in zip(real, shuffled)) >= 0.8 * n
    assert all(r < z for r, z in zip(real, noise))


def test_same_seed_same_losses(corpus, tmp_path):
    config = dict(TINY, max_steps=15, eval_every=5)
    first = train_reference(corpus[:80], tmp_path / "first", ReferenceConfig(**config))
    again = train_reference(corpus[:80], tmp_path / "again", ReferenceConfig(**config))
    for key in ("initial_heldout_loss", "final_train_loss", "final_heldout_loss"):
        assert again[key] == first[key]
    assert again["heldout_doc_indexes"] == first["heldout_doc_indexes"]
    assert (tmp_path / "first" / "tokenizer.json").read_text() == (tmp_path / "again" / "tokenizer.json").read_text()
    other = train_reference(corpus[:80], tmp_path / "other", ReferenceConfig(**dict(config, seed=8)))
    assert other["final_train_loss"] != first["final_train_loss"]


def test_the_default_split_of_a_small_store_takes_a_share_and_says_so(tmp_path):
    import pyarrow as pa

    import schemas
    from pipeline.store import Store
    from pipeline.train.stage import read_reference_split
    store = Store(tmp_path)
    ids = [f"{i:032x}" for i in range(1051)]
    store.write_table(pa.Table.from_pylist([{
        "doc_id": d, "text": f"document {i}", "url": None, "host": None, "domain": None, "source_id": None,
        "source_file": "in.jsonl", "source_offset": i, "source_format": "jsonl", "n_bytes": 12, "n_chars": 12,
        "language": "en", "language_score": 0.9, "metadata": None, "duplicate_count": 1,
        "duplicate_sources": None} for i, d in enumerate(ids)], schema=schemas.DOCS), schemas.DOCS,
        "docs", "part-00000.parquet")
    doc_ids, texts, rule = read_reference_split(store, ReferenceConfig())  # min_reference_docs 1000 by default
    assert len(doc_ids) == len(texts) == 262 and set(doc_ids) <= set(ids)
    assert rule.startswith("262 of 1,051 documents (24.9%, by min_reference_docs 1,000, capped at "
                           "max_reference_fraction 0.25)")
    _, _, plain = read_reference_split(store, ReferenceConfig(min_reference_docs=0))
    assert "by reference_fraction 0.1" in plain
    explicit, _, _ = read_reference_split(store, ReferenceConfig(max_reference_fraction=1.0))
    assert len(explicit) == 1000  # a wider share when asked for explicitly
