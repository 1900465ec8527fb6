"""Test helpers shared by several test files: a tiny real Llama model and a loopback HTTP server."""
import contextlib
import random
import socket
import threading
import time

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which "
         "data model token score corpus perplexity window stride batch byte").split()


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) + rng.choice([".", "!", " ü€"])
            for _ in range(n)]


CHAT_TEMPLATE = ("{% for m in messages %}<bos>{{ m['role'] }}\n{{ m['content'] }}<eos>\n{% endfor %}"
                 "{% if add_generation_prompt %}<bos>assistant\n{% endif %}")


def make_tiny_model_dir(path, chat: bool = False):
    """A tiny random LlamaForCausalLM (head_dim 32) with a byte-level BPE tokenizer, saved to `path`;
    `chat`: with a chat template (an instruct model's shape, for the rater)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<bos>", "<eos>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(random_texts(200, seed=1), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=32,
                         max_position_embeddings=4096 if chat else 256, initializer_range=0.2,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                         pad_token_id=fast.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


@contextlib.contextmanager
def running(app):
    """Serve `app` with uvicorn on a free loopback port in a thread; yields the base URL."""
    import uvicorn
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()




def fail_scoring_after(app, budget: dict, status: int):
    """Make a scoring service `app` answer /v1/score with `status` ("engine crashed") once
    `budget["requests"]` calls are spent, as if its GPU fell over; the doc_ids of the calls it let
    through are added to `budget["answered"]` (a list) when that key is there. Raising
    `budget["requests"]` later lets it recover. Returns `app`."""
    import json

    from fastapi.responses import JSONResponse

    @app.middleware("http")
    async def fail_after_budget(request, call_next):
        if request.url.path == "/v1/score":
            if budget["requests"] <= 0:
                return JSONResponse({"detail": "engine crashed"}, status_code=status)
            budget["requests"] -= 1
            if "answered" in budget:
                budget["answered"] += [d["doc_id"] for d in json.loads(await request.body())["documents"]]
        return await call_next(request)
    return app


WORDS = "the of and to in a is that for it as was with be by on not he this are or his from at which".split()


def write_host_corpus(path, hosts: list[str], seed: int) -> None:
    """docs.jsonl with one document per entry of `hosts` (its URL's host): prose of common words on a host
    starting with prose or target, number lists on numbers.*, and character noise elsewhere."""
    import json
    import random
    rng = random.Random(seed)
    with open(path / "docs.jsonl", "w") as f:
        for i, host in enumerate(hosts):
            if host.startswith(("prose", "target")):
                text = " ".join(rng.choice(WORDS) for _ in range(60))
            elif host.startswith("numbers"):
                text = " ".join(str(rng.randint(0, 999)) for _ in range(40))
            else:
                text = "".join(rng.choice("qxzjkv#@%&") for _ in range(200))
            f.write(json.dumps({"text": f"{text} {i}", "url": f"https://{host}/{i}"}) + "\n")
