"""TorchEngine against a brute-force full-logits computation, on a tiny random Llama."""
import math
import random

import numpy as np
import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import schemas  # noqa: E402
from pipeline.errors import UserError  # noqa: E402
from pipeline.scoring.torch_engine import TorchEngine  # noqa: E402

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which "
         "but have an they you were her she there been one all we their has would when if so no will "
         "data model token score corpus perplexity window stride batch byte").split()


def _corpus(rng: random.Random, n_docs: int, lo: int, hi: int) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) + rng.choice([".", "!", " ü€"])
            for _ in range(n_docs)]


def _make_model_dir(path, with_bos: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<bos>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(random.Random(0), 200, 5, 40), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>" if with_bos else None,
                                   pad_token="<pad>")
    fast.save_pretrained(path)

    torch.manual_seed(0)
    # head_dim 32: the smallest that vLLM's CPU attention supports, so the same shape serves there.
    config = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                         max_position_embeddings=1024, initializer_range=0.2, tie_word_embeddings=False,
                         bos_token_id=fast.bos_token_id, eos_token_id=None, pad_token_id=fast.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return _make_model_dir(tmp_path_factory.mktemp("tiny_bos"), with_bos=True)


@pytest.fixture(scope="module")
def tiny_dir_no_bos(tmp_path_factory):
    return _make_model_dir(tmp_path_factory.mktemp("tiny_nobos"), with_bos=False)


def _brute_force_nlls(engine: TorchEngine, text: str, max_tokens: int, truncation: str, stride: int):
    """Per-document NLLs from full logits, one sequence per forward pass, the textbook way."""
    tok = engine.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if tok.bos_token_id is not None:
        ids = [tok.bos_token_id] + ids
    ids = torch.tensor(ids)
    nlls = []
    with torch.no_grad():
        if truncation == "first_n":
            x = ids[:max_tokens]
            logits = engine.model(x[None]).logits[0].double()
            return torch.nn.functional.cross_entropy(logits[:-1], x[1:], reduction="none").numpy()
        # The strided loop of the transformers perplexity guide.
        prev_end = 0
        for begin in range(0, len(ids), stride):
            end = min(begin + max_tokens, len(ids))
            x = ids[begin:end]
            logits = engine.model(x[None]).logits[0].double()
            token_nll = torch.nn.functional.cross_entropy(logits[:-1], x[1:], reduction="none")
            n_new = end - max(prev_end, 1)
            nlls.append(token_nll[-n_new:].numpy())
            prev_end = end
            if end == len(ids):
                break
    return np.concatenate(nlls)


@pytest.mark.parametrize("truncation", ["first_n", "sliding"])
def test_engine_matches_brute_force_in_input_order(tiny_dir, truncation):
    rng = random.Random(42)
    texts = _corpus(rng, 23, 1, 60)
    docs = [(f"doc{i}", t) for i, t in enumerate(texts)]
    rng.shuffle(docs)
    # a small budget and CE chunk force many batches, padding and several chunks per batch
    engine = TorchEngine(tiny_dir, max_tokens=32, truncation=truncation, stride=12, token_budget=100,
                         ce_chunk=7)
    rows = engine.score(docs)
    assert [r["doc_id"] for r in rows] == [d for d, _ in docs]
    long_docs = 0
    for (doc_id, text), row in zip(docs, rows):
        ref = _brute_force_nlls(engine, text, 32, truncation, 12)
        n_tokens = len(engine.tokenizer(text, add_special_tokens=False)["input_ids"])
        long_docs += n_tokens + 1 > 32
        assert row["error"] is None and row["n_tokens"] == n_tokens
        assert row["n_predicted"] == len(ref) == (n_tokens if truncation == "sliding" else min(n_tokens, 31))
        assert row["nll_sum"] == pytest.approx(ref.sum(), rel=1e-4)
        assert row["nll_p50"] == pytest.approx(np.percentile(ref, 50), rel=1e-4, abs=1e-5)
        assert row["perplexity"] == pytest.approx(math.exp(row["nll_sum"] / row["n_predicted"]))
        assert row["bits_per_byte"] == pytest.approx(row["nll_sum"] / (math.log(2) * row["n_bytes"]))
        if truncation == "sliding" or n_tokens + 1 <= 32:
            assert row["n_bytes"] == len(text.encode("utf-8"))
        else:
            assert row["n_bytes"] < len(text.encode("utf-8"))
    assert long_docs >= 3                    # the windowing was exercised
    schemas.validate(pa.Table.from_pylist(rows), schemas.SCORES)
    assert rows[0]["truncation"] == ("first_n:32" if truncation == "first_n" else "sliding:32:12")


def test_batching_does_not_change_scores(tiny_dir):
    docs = [(str(i), t) for i, t in enumerate(_corpus(random.Random(3), 12, 1, 50))]
    one_by_one = TorchEngine(tiny_dir, max_tokens=64, token_budget=1).score(docs)
    batched = TorchEngine(tiny_dir, max_tokens=64, token_budget=4096).score(docs)
    for a, b in zip(one_by_one, batched):
        assert a["nll_sum"] == pytest.approx(b["nll_sum"], rel=1e-5)


def test_too_short_documents_give_error_rows(tiny_dir, tiny_dir_no_bos):
    # With a BOS the first token is predicted, so only an empty document has nothing to score.
    with_bos = TorchEngine(tiny_dir).score([("empty", ""), ("one", "x")])
    assert with_bos[0]["error"] == "too_short: 0 token(s)" and with_bos[0]["nll_sum"] is None
    assert with_bos[1]["error"] is None and with_bos[1]["n_predicted"] == 1 and with_bos[1]["n_tokens"] == 1
    # Without one, a single token is context only.
    rows = TorchEngine(tiny_dir_no_bos).score([("one", "x"), ("two", "the data")])
    assert rows[0]["error"] == "too_short: 1 token(s)" and rows[0]["n_predicted"] == 0
    assert rows[0]["n_bytes"] == 1 and rows[0]["perplexity"] is None
    assert rows[1]["error"] is None and rows[1]["n_predicted"] == rows[1]["n_tokens"] - 1
    schemas.validate(pa.Table.from_pylist(rows + with_bos), schemas.SCORES)


def test_identity(tiny_dir):
    engine = TorchEngine(tiny_dir, max_tokens=48, truncation="sliding", stride=16)
    ident = engine.identity
    assert ident.backend == "torch" and ident.dtype == "float32" and ident.max_tokens == 48
    assert ident.truncation_label == "sliding:48:16" and len(ident.weights_sha256) == 64
    assert TorchEngine(tiny_dir, max_tokens=48, truncation="sliding", stride=16).identity.scorer_id == ident.scorer_id
    assert TorchEngine(tiny_dir, max_tokens=48).identity.scorer_id != ident.scorer_id
    assert torch.get_num_threads() >= 1
    with pytest.raises(UserError, match="exceeds the model's context of 1024"):
        TorchEngine(tiny_dir, max_tokens=2048)


def test_char_cut_changes_no_scored_token_of_a_long_document(tiny_dir):
    """first_n reads a document only to max_tokens * CHARS_PER_TOKEN characters: for a long ordinary
    document the scored tokens, NLLs and bytes are those of the whole text tokenized."""
    from pipeline.scoring import core
    engine = TorchEngine(tiny_dir, max_tokens=32)
    limit = core.char_limit(engine.identity)
    text = " ".join(_corpus(random.Random(5), 200, 5, 40))
    assert len(text) > 10 * limit
    row = engine.score([("long", text)])[0]
    ref = _brute_force_nlls(engine, text, 32, "first_n", 12)                 # the whole text tokenized
    assert row["n_predicted"] == len(ref) == 31 and row["nll_sum"] == pytest.approx(ref.sum(), rel=1e-4)
    assert row["nll_p90"] == pytest.approx(np.percentile(ref, 90), rel=1e-4)
    whole = engine.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert row["n_bytes"] == len(text[:whole["offset_mapping"][30][1]].encode())
    assert row == engine.score([("long", text[:limit])])[0]                  # the cut is all it read
    assert row["n_tokens"] < len(whole["input_ids"])
    # A 2 MB single-line page: only its first `limit` characters are tokenized.
    huge = engine.score([("huge", text.replace(" ", "") * (2_000_000 // len(text) + 1))])[0]
    assert huge["error"] is None and huge["n_predicted"] == 31 and huge["n_tokens"] <= limit
    # Sliding windows score every token: nothing is cut.
    sliding = TorchEngine(tiny_dir, max_tokens=32, truncation="sliding", stride=16).score([("long", text)])[0]
    assert sliding["n_predicted"] == sliding["n_tokens"] == len(whole["input_ids"])
