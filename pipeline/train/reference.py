"""Train a small reference LM on a random split of the corpus (Ankner et al. 2024, "Perplexed by Perplexity").

The recipe: split the corpus at random into a *reference* split and the rest, train a small causal LM on
the reference split, and score every other document with it (pipeline.scoring). Here the model is a
`transformers.LlamaForCausalLM` of a few million parameters, so that on a 2-core CPU it trains in a minute
or two and then scores thousands of documents in a minute or two; on a GPU the same code trains bigger
ones. The saved directory is a plain HF checkpoint (config.json, model.safetensors, tokenizer.json) that
transformers and vLLM load as they load any Llama, plus `curate_model.json` recording how it was made.

Its configuration is `pipeline.config.ReferenceConfig` (the `reference:` section of the run config).
Read top to bottom: the reference split, the tokenizer, data (encode + pack), the model, the
learning-rate schedule, evaluation, and the training loop that ties them together.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import ReferenceConfig
from pipeline.errors import UserError
from pipeline.hashing import reference_split_key
from schemas import sidecars

if TYPE_CHECKING:  # torch and transformers are the optional [torch] extra: imported where used
    import torch
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"

# progress(step, total_steps, train_loss, heldout_loss); see train_reference for when it is called.
Progress = Callable[[int, int, "float | None", "float | None"], None]


# ----------------------------------------------------------------------------------------------------
# The reference split
def split_reference(doc_ids: Iterable[str], fraction: float, seed: int = 0, min_docs: int = 0,
                    max_fraction: float = 1.0) -> set[str]:
    """The documents of the reference split: doc_id is in it iff u(seed, doc_id) < fraction, where u is
    `hashing.reference_split_key`, a 64-bit blake2b hash of (seed, doc_id) scaled to [0, 1).

    Hashing each id (rather than shuffling the list) makes a document's side of the split a property of
    the document and the seed alone: independent of input order, of partitioning (a Spark task can decide
    it locally), and stable when documents are added — a document once used for training the reference
    model never lands in the scored split of a grown corpus. The size is Binomial(n, fraction).

    With `min_docs`, if fewer than min_docs documents fall below `fraction`, the threshold is raised to
    take the min_docs documents of smallest u instead, but never more than floor(max_fraction * n) of
    the n documents (a small store keeps most of its documents for selection); this is still
    order-independent, and a superset of the plain split.
    """
    keyed = [(reference_split_key(d, seed), d) for d in set(doc_ids)]
    chosen = {d for u, d in keyed if u < fraction}
    wanted = min(min_docs, math.floor(max_fraction * len(keyed)))
    if len(chosen) < wanted:
        chosen = {d for _, d in sorted(keyed)[:wanted]}
    return chosen


# ----------------------------------------------------------------------------------------------------
# Tokenizer
def train_tokenizer(texts: Iterable[str], vocab_size: int) -> "PreTrainedTokenizerFast":
    """A byte-level BPE (GPT-2 style: every byte is a base symbol, so no text is out of vocabulary) of at
    most vocab_size entries, trained with `tokenizers` on `texts`. Special tokens: <|bos|> (id 0),
    <|eos|> (1), <|pad|> (2). Like Llama's tokenizers, it prepends <|bos|> when add_special_tokens is on,
    so `tokenizer(text)` gives what the model saw at the start of every training document.
    `save_pretrained` writes tokenizer.json + tokenizer_config.json that AutoTokenizer loads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)


# ----------------------------------------------------------------------------------------------------
# Data: every document becomes BOS + tokens + EOS; documents are concatenated and cut into rows
def encode_documents(tokenizer: "PreTrainedTokenizerFast", texts: Sequence[str]) -> list[list[int]]:
    """[bos] + tokens + [eos] per text (the Rust tokenizer, batched)."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    encodings = tokenizer.backend_tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [[bos, *e.ids, eos] for e in encodings]


def pack_sequences(docs: Sequence[Sequence[int]], seq_len: int) -> "torch.Tensor":
    """Concatenate the documents and cut the stream into rows of seq_len tokens, dropping the remainder
    (as in GPT-2/nanoGPT pretraining: a row may span documents, the BOS/EOS marks tell them apart). A
    stream shorter than one row gives a single shorter row, so a tiny held-out split still has a loss."""
    import torch

    stream = torch.tensor([t for doc in docs for t in doc], dtype=torch.long)
    if len(stream) < seq_len:
        return stream[None, :]
    n_rows = len(stream) // seq_len
    return stream[: n_rows * seq_len].view(n_rows, seq_len)


def split_heldout(n_docs: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) document indexes: a seeded permutation, at least one document on each side."""
    import torch

    if n_docs < 2:
        raise UserError(f"the reference split has {n_docs} document(s); training needs at least 2 "
                        "(raise reference_fraction or min_reference_docs)")
    order = torch.randperm(n_docs, generator=torch.Generator().manual_seed(seed)).tolist()
    n_heldout = min(n_docs - 1, max(1, round(fraction * n_docs)))
    return sorted(order[n_heldout:]), sorted(order[:n_heldout])


# ----------------------------------------------------------------------------------------------------
# Model
def build_model(config: ReferenceConfig, tokenizer: "PreTrainedTokenizerFast") -> "LlamaForCausalLM":
    """A standard LlamaForCausalLM (RMSNorm, RoPE, SwiGLU, tied embeddings), initialised from the
    current torch seed. The vocabulary is the tokenizer's, rounded up to a multiple of 64."""
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = 64 * math.ceil(len(tokenizer) / 64)
    llama = LlamaConfig(
        vocab_size=vocab,
        hidden_size=config.hidden_size,
        intermediate_size=config.mlp_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        head_dim=config.head_dim,
        max_position_embeddings=config.max_seq_len,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    return LlamaForCausalLM(llama)


# ----------------------------------------------------------------------------------------------------
# Learning-rate schedule
def lr_at(step: int, total_steps: int, config: ReferenceConfig) -> float:
    """Linear warmup from lr/warmup to lr over warmup_steps, then cosine decay to min_lr_ratio * lr at
    the last step:  lr_t = lr_min + (lr - lr_min) * (1 + cos(pi * p)) / 2,  p = progress after warmup."""
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    p = (step - warmup) / max(total_steps - 1 - warmup, 1)
    lr_min = config.min_lr_ratio * config.lr
    return lr_min + (config.lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * min(p, 1.0)))


# ----------------------------------------------------------------------------------------------------
# Evaluation
def mean_token_nll(model: "LlamaForCausalLM", rows: "torch.Tensor", batch_size: int) -> float:
    """Mean next-token negative log-likelihood (nats) over every predicted token of `rows`:
    sum_i sum_{t>=1} -log p(x_t | x_<t) / (n_rows * (seq_len - 1))."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll_sum, n_tokens = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(rows), batch_size):
            ids = rows[i: i + batch_size].to(device)
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
            targets = ids[:, 1:]
            nll_sum += F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                       reduction="sum").item()
            n_tokens += targets.numel()
    model.train(was_training)
    return nll_sum / max(n_tokens, 1)


# ----------------------------------------------------------------------------------------------------
# Training
def _total_steps(config: ReferenceConfig, n_train_rows: int) -> int:
    limits = [math.ceil(config.max_epochs * n_train_rows / config.batch_size)]
    if config.max_steps is not None:
        limits.append(config.max_steps)
    if config.max_train_tokens is not None:
        limits.append(math.ceil(config.max_train_tokens / config.tokens_per_step))
    return max(1, min(limits))


def _batches(n_rows: int, batch_size: int, seed: int):
    """Row indexes of each batch, forever: a fresh seeded permutation per epoch (deterministic order)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n_rows, generator=generator)
        for i in range(0, n_rows - batch_size + 1, batch_size):
            yield order[i: i + batch_size]
        if n_rows < batch_size:  # a split smaller than one batch: train on all of it every step
            yield order


def train_reference(texts: Sequence[str], out_dir: str | Path, config: ReferenceConfig | None = None,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Train the reference model on `texts` (the reference split) and save it to `out_dir`.

    Steps: hold out `heldout_fraction` of the documents; train the BPE on the rest; encode every document
    as BOS + text + EOS and pack into rows of max_seq_len; train a LlamaForCausalLM with AdamW (decay on
    matrices only), warmup + cosine schedule and gradient clipping; save config.json + model.safetensors
    + tokenizer files + curate_model.json.

    `progress(step, total_steps, train_loss, heldout_loss)` is called once before training
    (step 0, train_loss None, the held-out loss of the initial model) and after every step with that
    step's train loss; heldout_loss is a float every `eval_every` steps and at the last step, else None.

    Returns a summary: params, tokens, steps, seconds, tokens_per_second, the initial and final held-out
    losses, the final train loss (mean over the last eval_every steps) and the held-out document indexes.
    Deterministic for a seed on CPU with a fixed num_threads.
    """
    import torch

    config = config or ReferenceConfig()
    out_dir = Path(out_dir)
    t_start = time.perf_counter()
    previous_threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {config.device!r} was asked for the reference model, but torch sees no "
                        "CUDA GPU; use device: cpu")
    try:
        # 1. data: held-out documents, a tokenizer trained on the training documents, packed rows
        texts = list(texts)
        train_idx, heldout_idx = split_heldout(len(texts), config.heldout_fraction, config.seed)
        train_texts = [texts[i] for i in train_idx]
        tokenizer = train_tokenizer(train_texts, config.vocab_size)
        tokenizer.model_max_length = config.max_seq_len
        train_rows = pack_sequences(encode_documents(tokenizer, train_texts), config.max_seq_len)
        heldout_rows = pack_sequences(encode_documents(tokenizer, [texts[i] for i in heldout_idx]),
                                      config.max_seq_len)[: config.eval_max_rows]
        if len(train_rows) == 0 or train_rows.shape[1] < config.max_seq_len:
            raise UserError(f"the reference split has fewer than {config.max_seq_len} training tokens; "
                            "raise reference_fraction or min_reference_docs")
        total_steps = _total_steps(config, len(train_rows))

        # 2. model and optimiser (weight decay on matrices, not on norms)
        torch.manual_seed(config.seed)
        model = build_model(config, tokenizer).to(config.device)
        n_params = sum(p.numel() for p in model.parameters())
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr, betas=(0.9, 0.95), eps=1e-8)

        # 3. the loop
        eval_batch = config.batch_size
        initial_heldout = mean_token_nll(model, heldout_rows, eval_batch)
        if progress:
            progress(0, total_steps, None, initial_heldout)
        batches = _batches(len(train_rows), config.batch_size, config.seed)
        train_losses: list[float] = []
        heldout_loss = initial_heldout
        history = [{"step": 0, "heldout_loss": initial_heldout}]
        t_train = time.perf_counter()
        model.train()
        for step in range(total_steps):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, config)
            ids = train_rows[next(batches)].to(config.device)
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            train_losses.append(loss.item())

            done = step + 1
            evaluated = None
            if done % config.eval_every == 0 or done == total_steps:
                heldout_loss = evaluated = mean_token_nll(model, heldout_rows, eval_batch)
                history.append({"step": done, "train_loss": _mean(train_losses[-config.eval_every:]),
                                "heldout_loss": heldout_loss})
            if progress:
                progress(done, total_steps, train_losses[-1], evaluated)
        train_seconds = time.perf_counter() - t_train

        # 4. save: a plain HF checkpoint plus how it was made
        n_train_tokens = total_steps * config.tokens_per_step
        summary = {
            "name": config.model_name,
            "kind": "trained_reference",
            "params": n_params,
            "steps": total_steps,
            "n_train_tokens": n_train_tokens,
            "n_reference_docs": len(texts),
            "n_train_docs": len(train_idx),
            "n_heldout_docs": len(heldout_idx),
            "train_split_tokens": int(train_rows.numel()),
            "heldout_tokens": int(heldout_rows.numel()),
            "epochs": round(total_steps * config.batch_size / len(train_rows), 3),
            "initial_heldout_loss": initial_heldout,
            "final_train_loss": _mean(train_losses[-config.eval_every:]),
            "final_heldout_loss": heldout_loss,
            "train_seconds": round(train_seconds, 3),
            "tokens_per_second": round(n_train_tokens / train_seconds, 1),
            "seed": config.seed,
        }
        _save(model, tokenizer, out_dir, config, summary, history, heldout_idx)
        summary["seconds"] = round(time.perf_counter() - t_start, 3)
        summary["heldout_doc_indexes"] = heldout_idx
        summary["out_dir"] = str(out_dir)
        return summary
    finally:
        torch.set_num_threads(previous_threads)


def _save(model, tokenizer, out_dir: Path, config: ReferenceConfig, summary: dict, history: list,
          heldout_idx: list[int]) -> None:
    import torch
    import transformers

    import pipeline

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)          # config.json + model.safetensors
    tokenizer.save_pretrained(out_dir)      # tokenizer.json + tokenizer_config.json
    record = {
        **summary,
        "config": config.model_dump(mode="json") | {"intermediate_size": config.mlp_size},
        "tokenizer": {"kind": "byte_level_bpe", "vocab_size": len(tokenizer), "bos_token": BOS,
                      "eos_token": EOS, "pad_token": PAD, "adds_bos": True, "max_tokens": config.max_seq_len},
        "history": history,
        "heldout_doc_indexes": heldout_idx,
        "versions": {"pipeline": pipeline.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__},
    }
    record = sidecars.TRAINED_MODEL.validate(record)
    (out_dir / "curate_model.json").write_text(json.dumps(record, indent=2) + "\n")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
