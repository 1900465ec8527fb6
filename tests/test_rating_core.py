"""The DataMan answer format, its strict parser and expected scores, and the selection recipes against
brute-force references on random inputs."""
import math

import numpy as np
import pytest

from pipeline.rating.answer import CRITERIA, DOMAINS, answer_text, expected_scores, parse_answer
from pipeline.rating.recipes import (multi_domain, overall_level, quality_mix, temperature, temperature_probability,
                                     top_k)


def test_fourteen_criteria_overall_last_and_fifteen_domains():
    assert len(CRITERIA) == 14 and CRITERIA[-1] == "Overall Score" and len(set(CRITERIA)) == 14
    assert list(DOMAINS) == [chr(ord("A") + i) for i in range(15)] and DOMAINS["H"] == "Coding"


def test_the_parser_reads_the_format_and_names_what_is_wrong():
    scores = [5, 4, 3, 2, 1, 5, 4, 3, 2, 1, 5, 4, 3, 4]
    got = parse_answer(answer_text("E", scores))
    assert got.ok and got.domain == "E" and got.scores == tuple(scores)
    assert parse_answer("\n  E \n\n" + "\n".join(map(str, scores)) + "\n").scores == tuple(scores)
    assert "expected 15 lines" in parse_answer(answer_text("E", scores[:13])).error
    assert "not a letter A-O" in parse_answer(answer_text("Z", scores)).error
    bad = parse_answer(answer_text("E", scores).replace("\n3\n2\n1\n5", "\n3\n2\n6\n5"))
    assert bad.error.startswith("Knowledge Novelty: '6' is not an integer 1-5") and bad.domain == "E"
    prose = parse_answer("The domain is accuracy 5, coherence is 5, ...")
    assert not prose.ok and prose.scores is None
    assert parse_answer("").error == "expected 15 lines (a domain letter, then 14 scores), got 0"


def test_expected_scores_by_hand():
    p = [[0, 0, 0, 0, 1], [1, 1, 0, 0, 0], [0.2, 0.2, 0.2, 0.2, 0.2], [0, 0, 2, 0, 2]]
    np.testing.assert_allclose(expected_scores(p), [5.0, 1.5, 3.0, 4.0])
    with pytest.raises(ValueError):
        expected_scores([[0, 0, 0, 0, 0]])


def _greedy_budget(order, tokens, budget):
    """Brute force: walk the documents in order, keeping each while the kept tokens are under budget."""
    keep, total = np.zeros(len(tokens), dtype=bool), 0.0
    for i in order:
        if total >= budget:
            break
        keep[i], total = True, total + tokens[i]
    return keep


@pytest.mark.parametrize("seed", range(5))
def test_recipes_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 300
    scores = rng.integers(1, 6, (n, 14))
    tokens = rng.integers(10, 500, n).astype(float)
    keys = rng.random(n)
    budget = float(tokens.sum() * rng.uniform(0.1, 0.6))
    mix = quality_mix(scores)
    assert mix.tolist() == [sum(row) for row in scores.tolist()]
    order = sorted(range(n), key=lambda i: (-mix[i], i))
    np.testing.assert_array_equal(top_k(mix, tokens, budget), _greedy_budget(order, tokens, budget))

    overall = scores[:, -1]
    level_budget = budget / 5
    rated = [i for i in sorted(range(n), key=lambda i: keys[i]) if overall[i] == 4]
    np.testing.assert_array_equal(overall_level(overall, 4, tokens, keys, level_budget),
                                  _greedy_budget(rated, tokens, level_budget))
    assert overall_level(overall, 4, tokens, keys).tolist() == (overall == 4).tolist()

    sources = rng.choice(["web", "books", "code"], n)
    domains = rng.choice(list("ABEH"), n)
    expected = np.zeros(n, dtype=bool)
    for s in set(sources):
        s_tokens = tokens[sources == s].sum()
        for d in set(domains[sources == s]):
            cell = [i for i in range(n) if sources[i] == s and domains[i] == d]
            cell_budget = budget * s_tokens / tokens.sum() * tokens[cell].sum() / s_tokens
            chosen = _greedy_budget(sorted(cell, key=lambda i: (-mix[i], i)), tokens, cell_budget)
            expected |= chosen
    np.testing.assert_array_equal(multi_domain(sources, domains, mix, tokens, budget), expected)


def test_temperature_sampling_keeps_the_rate_and_favours_high_scores():
    rng = np.random.default_rng(0)
    values = rng.integers(1, 6, 2000).astype(float)
    p = temperature_probability(values, tau=2.0, rate=0.3)
    assert p.mean() == pytest.approx(0.3) and p.max() <= 1
    # proportional to exp(score / tau) wherever it is not capped at 1
    free = p < 1
    ratio = p[free] / np.exp(values[free] / 2.0)
    np.testing.assert_allclose(ratio, ratio[0])
    assert math.isclose(p[values == 5].mean() / p[values == 4].mean(), math.exp(0.5), rel_tol=1e-9)
    kept = temperature(values, 2.0, 0.3, rng.random(2000))
    assert abs(kept.mean() - 0.3) < 0.03 and values[kept].mean() > values.mean()
    with pytest.raises(ValueError, match="tau"):
        temperature_probability(values, 0, 0.3)


def test_the_prompt_holds_the_text_and_the_template_and_long_texts_keep_head_and_tail():
    from pipeline.rating.prompt import ANSWER_SLOTS, build_prompt, head_tail, template
    prompt = build_prompt("Some text to rate.")
    assert "Some text to rate." in prompt and prompt.endswith(template())
    assert template().splitlines()[0] == "Domain:_" and template().splitlines()[-1] == "[14]Overall Score:_/5"
    assert len(ANSWER_SLOTS) == 15 and ANSWER_SLOTS[0][0] == "A" and ANSWER_SLOTS[0][-1] == "O"
    assert all(slot == ("1", "2", "3", "4", "5") for slot in ANSWER_SLOTS[1:])
    ids = list(range(100))
    assert head_tail(ids, 100, [-1]) == ids
    cut = head_tail(ids, 11, [-1, -2])
    assert cut == [0, 1, 2, 3, 4, -1, -2, 96, 97, 98, 99] and len(cut) == 11
    for budget in range(4, 60):      # always exactly the budget, head and tail of the text around the ellipsis
        cut = head_tail(ids, budget, [-1])
        k = cut.index(-1)
        assert len(cut) == budget and cut[:k] == ids[:k] and cut[k + 1:] == ids[100 - (budget - 1 - k):]
    with pytest.raises(ValueError):
        head_tail(ids, 2, [-1])


def test_constrained_decoding_matches_a_full_forward_pass_and_always_parses(tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    from pipeline.rating.answer import expected_scores
    from pipeline.rating.constrained import SEPARATOR, constrained_answer, slot_token_ids
    from pipeline.rating.prompt import ANSWER_SLOTS
    from pipeline.scoring import core
    from tests.helpers import make_tiny_model_dir
    model_dir = make_tiny_model_dir(tmp_path / "tiny")
    tokenizer = core.load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = core.encode(tokenizer, "the model and the data of the corpus score").ids
    chosen, probs = constrained_answer(model, tokenizer, prompt, ANSWER_SLOTS)
    parsed = parse_answer("\n".join(chosen))
    assert parsed.ok and len(probs) == 15 and expected_scores(probs[1:]).shape == (14,)
    # brute force: the whole answer in one forward pass; at each slot the choice is the likeliest
    # allowed token and the probabilities are the softmax over the allowed tokens
    allowed = slot_token_ids(tokenizer, ANSWER_SLOTS)
    sep = tokenizer(SEPARATOR, add_special_tokens=False)["input_ids"]
    ids, positions = list(prompt), []
    for k, text in enumerate(chosen):
        if k:
            ids += sep
        positions.append(len(ids) - 1)
        ids.append(allowed[k][ANSWER_SLOTS[k].index(text)])
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    for k, position in enumerate(positions):
        expected = torch.softmax(logits[position, allowed[k]], dim=-1).numpy()
        np.testing.assert_allclose(probs[k], expected, atol=1e-5)
        assert ANSWER_SLOTS[k][int(np.argmax(expected))] == chosen[k]
