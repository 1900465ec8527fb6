"""The proxy trainer on a mixture of groups: rows dealt by the proportions, per-group held-out losses that
follow what it trains on, an exact resume from a checkpoint, and Aioli driving it."""
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.config import ReferenceConfig  # noqa: E402
from pipeline.mixing.aioli import AioliSettings, run_aioli  # noqa: E402
from pipeline.train.proxy import ProxyTrainer  # noqa: E402
from pipeline.train.reference import encode_documents, pack_sequences, train_tokenizer  # noqa: E402

CONFIG = ReferenceConfig(vocab_size=300, hidden_size=64, num_layers=1, num_heads=2, max_seq_len=32, batch_size=8,
                         lr=3e-3, warmup_steps=2, seed=0, num_threads=1)


@pytest.fixture(scope="module")
def data():
    """Two groups that share nothing: English-like word salad and digit strings."""
    rng = random.Random(0)
    words = "the of and to in a is that for it as was with be by on not he this are".split()
    prose = [" ".join(rng.choice(words) for _ in range(40)) for _ in range(80)]
    digits = [" ".join(str(rng.randint(0, 999)) for _ in range(30)) for _ in range(80)]
    tokenizer = train_tokenizer(prose + digits, 300)
    rows = [pack_sequences(encode_documents(tokenizer, texts), 32) for texts in (prose, digits)]
    return tokenizer, [r[:-8] for r in rows], [r[-8:] for r in rows]


def test_rows_follow_the_proportions_and_losses_follow_the_training(data):
    tokenizer, train_rows, heldout = data
    trainer = ProxyTrainer(tokenizer, train_rows, heldout, CONFIG, total_steps=40)
    before = trainer.evaluate()
    trainer.train(np.array([1.0, 0.0]), 20)                 # only prose
    after = trainer.evaluate()
    assert trainer.allocator.dealt.tolist() == [160, 0] and trainer.step == 20 and trainer.tokens == 160 * 32
    assert before[0] - after[0] > 2 * (before[1] - after[1]) and trainer.tokens_per_second > 0
    trainer.train(np.array([0.25, 0.75]), 20)
    assert trainer.allocator.dealt.tolist() == [200, 120]
    with pytest.raises(ValueError, match="spent"):
        trainer.train(np.array([0.5, 0.5]), 1)


def test_a_resumed_trainer_continues_exactly(data, tmp_path):
    tokenizer, train_rows, heldout = data
    straight = ProxyTrainer(tokenizer, train_rows, heldout, CONFIG, total_steps=30)
    straight.train(np.array([0.7, 0.3]), 12)
    straight.save(tmp_path / "proxy.pt")
    straight.train(np.array([0.2, 0.8]), 13)
    resumed = ProxyTrainer(tokenizer, train_rows, heldout, CONFIG, total_steps=30)
    resumed.load(tmp_path / "proxy.pt")
    assert resumed.step == 12
    resumed.train(np.array([0.2, 0.8]), 13)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(straight.evaluate(), resumed.evaluate())
    assert straight.allocator.dealt.tolist() == resumed.allocator.dealt.tolist()


def test_aioli_drives_the_proxy_within_its_budget(data):
    tokenizer, train_rows, heldout = data
    trainer = ProxyTrainer(tokenizer, train_rows, heldout, CONFIG, total_steps=48)
    settings = AioliSettings(round_steps=16, lp_rounds=1, lp_steps=2, eta=1.0, one_hot_factor=0.75)
    run = run_aioli(trainer.train, trainer.evaluate, 2, 48, settings)
    assert run.steps == trainer.step == 48 and len(run.proportions) == 3
    assert all(abs(p.sum() - 1) < 1e-9 for p in run.proportions)
    assert trainer.allocator.dealt.sum() == 48 * CONFIG.batch_size


def test_the_proxy_warms_up_over_a_tenth_of_its_steps_unless_told():
    from pipeline.config import ProxyModelConfig
    from pipeline.train.proxy import proxy_reference_config
    from pipeline.train.reference import lr_at
    ref = proxy_reference_config(ProxyModelConfig(lr=1e-3), seed=3, total_steps=1000)
    assert ref.warmup_steps == 100 and ref.seed == 3
    assert lr_at(49, 1000, ref) == pytest.approx(0.5e-3) and lr_at(100, 1000, ref) == pytest.approx(1e-3)
    assert proxy_reference_config(ProxyModelConfig(warmup_steps=7), 0, 1000).warmup_steps == 7
    assert proxy_reference_config(ProxyModelConfig(), 0, 5).warmup_steps == 1
