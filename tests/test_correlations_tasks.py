"""Multiple-choice scoring by hand, the task file's format, and the cloze task built from passages."""
import json
import math

import pytest

from pipeline.correlations.tasks import TaskItem, accuracy, cloze_task, read_task, sentences, write_task


def test_accuracy_and_length_normalised_accuracy_by_hand():
    items = [TaskItem("The cat", (" sat", " jumped over"), 1), TaskItem("A", (" b", " cc"), 0)]
    # item 1: sums -3 vs -4 -> acc picks 0 (wrong); per byte -3/4 vs -4/12 -> acc_norm picks 1 (right)
    # item 2: -1 vs -1 -> a tie goes to the first choice (right); per byte -1/2 vs -1/3 -> 1 (wrong)
    result = accuracy(items, [[-3.0, -4.0], [-1.0, -1.0]])
    # gold NLL: 4 nats over " jumped over" (12 bytes) + 1 nat over " b" (2 bytes)
    assert result == {"acc": 0.5, "acc_norm": 0.5, "error": 0.5, "error_norm": 0.5, "items": 2,
                      "bits_per_byte": pytest.approx(5 / (math.log(2) * 14))}
    assert accuracy(items[:1], [[-5.0, -4.0]])["acc"] == 1.0
    with pytest.raises(ValueError, match="2 choices but 3 scores"):
        accuracy(items[:1], [[-1.0, -2.0, -3.0]])


def test_the_task_file_round_trips_and_bad_lines_name_their_place(tmp_path):
    items = [TaskItem("ctx", (" a", " b", " c"), 2)]
    assert read_task(write_task(items, tmp_path / "t.jsonl")) == items
    (tmp_path / "bad.jsonl").write_text(json.dumps({"context": "x", "choices": [" a", " b"], "gold": 0}) + "\n"
                                        + json.dumps({"context": "x", "choices": [" a"], "gold": 0}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: .*at least 2 choices"):
        read_task(tmp_path / "bad.jsonl")


def test_sentences_split_at_boundaries_only():
    assert sentences('He left!  "Then" (later) he came back? 5 more. no split here.') == \
        ["He left!", '"Then" (later) he came back?', "5 more. no split here."]
    assert sentences("One two. Three four! Five?") == ["One two.", "Three four!", "Five?"]


def test_the_cloze_task_asks_for_the_true_next_sentence():
    passages = [" ".join(f"Passage {p} sentence {s} says something about topic {p * 7 + s}." for s in range(6))
                for p in range(30)]
    items = cloze_task(passages, n_items=20, n_choices=4, seed=3, min_context_chars=100)
    assert len(items) == 20
    golds = [i.gold for i in items]
    assert len(set(golds)) > 1                                    # the gold is not always in one place
    for item in items:
        p = int(item.context.split()[1])
        assert passages[p].startswith(item.context)
        true_next = passages[p][len(item.context):].strip().split(".")[0] + "."
        assert item.choices[item.gold] == " " + true_next and len(item.context) >= 100
        for k, choice in enumerate(item.choices):                 # distractors come from other passages
            assert choice.startswith(" ") and (k == item.gold or f"Passage {p} " not in choice)
        assert len(set(item.choices)) == 4
    assert cloze_task(passages, 20, seed=3, min_context_chars=100) == items      # seeded
    assert cloze_task(passages, 20, seed=4, min_context_chars=100) != items
    with pytest.raises(ValueError, match="no cloze item"):
        cloze_task(["Too short."], 5)


def test_choice_log_likelihoods_match_scoring_each_sequence_alone(tmp_path):
    """Padding choices of different lengths into one batch changes nothing: each sum equals the model's
    log-probability of the choice's tokens computed on that sequence alone."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    from pipeline.correlations.benchmark import choice_logprobs
    from pipeline.scoring import core
    from tests.helpers import make_tiny_model_dir
    model_dir = make_tiny_model_dir(tmp_path / "tiny")
    items = [TaskItem("the model and the data", (" is", " of the corpus score", " window"), 1),
             TaskItem("a byte", (" token.", " perplexity stride batch"), 0)]
    got = choice_logprobs(model_dir, items)
    tokenizer = core.load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    for item, sums in zip(items, got):
        n_context = len(core.encode(tokenizer, item.context).ids)
        for choice, value in zip(item.choices, sums):
            ids = core.encode(tokenizer, item.context + choice).ids
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], dim=-1)
            expected = sum(float(logp[p - 1, ids[p]]) for p in range(n_context, len(ids)))
            assert value == pytest.approx(expected, abs=1e-4)
    assert accuracy(items, got)["items"] == 2


def test_a_leaderboard_of_two_models_feeds_the_benchmark_errors(tmp_path):
    pytest.importorskip("torch")
    from pipeline.correlations.benchmark import choice_logprobs, leaderboard
    from pipeline.correlations.matrix import benchmark_errors
    from tests.helpers import make_tiny_model_dir
    a, b = make_tiny_model_dir(tmp_path / "a"), make_tiny_model_dir(tmp_path / "b")
    items = [TaskItem("the data", (" model", " of the"), 1), TaskItem("a token", (" is", " byte window"), 0),
             TaskItem("score", (" the", " corpus"), 1)]
    table = leaderboard({"a": a, "b": b}, items, "cloze")
    assert table.column("model").to_pylist() == ["a", "b"] and table.column("items").to_pylist() == [3, 3]
    expected = accuracy(items, choice_logprobs(a, items))
    assert table.column("accuracy")[0].as_py() == expected["acc"]
    assert table.column("accuracy_norm")[0].as_py() == expected["acc_norm"]
    assert benchmark_errors(table)["a"] == pytest.approx(1 - expected["acc"])
