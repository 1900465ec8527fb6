"""`curate rate` (DataMan-style ratings) and `curate serve` (the scoring service, with its rater)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline.cli import CONFIG, MASTER, STORE, _config, _run_stage, app


@app.command()
def rate(
    store: Optional[str] = STORE,
    config: Optional[Path] = CONFIG,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="an instruct model directory, or smollm2-135m "
                                        "(the default)"),
    service: Optional[str] = typer.Option(None, "--service", help="rate through `curate serve --rater` at this URL"),
    token: Optional[str] = typer.Option(None, "--token", help="the service's bearer token"),
    decoding: Optional[str] = typer.Option(None, "--decoding", help="constrained (any instruct model) | greedy "
                                           "(DataMan checkpoints)"),
    text_tokens: Optional[int] = typer.Option(None, "--text-tokens", help="rate.text_tokens (512)"),
    sample_docs: Optional[int] = typer.Option(None, "--sample-docs", help="rate.min_sample_docs (200)"),
    student: Optional[list[str]] = typer.Option(None, "--student", help="a rating a student learns (repeat it; "
                                                "replaces rate.students); --student none: no student"),
    engine: Optional[str] = typer.Option(None, "--engine", help="torch | vllm"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda"),
    where: Optional[str] = typer.Option(None, "--where", help="filter on docs, e.g. \"language = 'en'\""),
    master: Optional[str] = MASTER,
):
    """Rate documents DataMan-style (14 criteria 1-5 and a domain) with an instruct LLM on a stratified sample,
    then let students of the ratings rate every document. Writes store/ratings/rater=<id>/; select with
    --rule rating:top_k:0.3 (or overall_level, multi_domain, temperature). Re-running resumes."""
    from pipeline.run import STAGES
    students = None if not student else ([] if student == ["none"] else student)
    cfg = _config(config, {"store": store, "rate.model": model, "rate.service_url": service,
                           "rate.service_token": token, "rate.decoding": decoding, "rate.text_tokens": text_tokens,
                           "rate.min_sample_docs": sample_docs, "rate.students": students, "rate.engine": engine,
                           "rate.device": device, "rate.where": where, "spark.master": master})
    _run_stage("rate", lambda progress: STAGES["rate"].run(cfg, progress))


@app.command()
def serve(model: str = typer.Option(..., "--model", "-m", help="model directory"),
          engine: str = typer.Option("torch", "--engine", help="torch | vllm"),
          device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
          dtype: Optional[str] = typer.Option(None, "--dtype", help="default: float32 on CPU, bfloat16 on GPU"),
          max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="default: the model's context, <= 1024"),
          truncation: str = typer.Option("first_n", "--truncation", help="first_n | sliding"),
          stride: int = typer.Option(512, "--stride"),
          host: str = typer.Option("127.0.0.1", "--host"),
          port: int = typer.Option(8000, "--port"),
          token: Optional[str] = typer.Option(None, "--token", envvar="CURATE_SERVICE_TOKEN", help="bearer token"),
          max_docs: int = typer.Option(256, "--max-docs", help="documents per request"),
          max_doc_bytes: int = typer.Option(1_000_000, "--max-doc-bytes", help="bytes per document"),
          rater: bool = typer.Option(False, "--rater", help="also rate at POST /v1/rate (an instruct model)"),
          decoding: str = typer.Option("constrained", "--decoding", help="the rater's: constrained | greedy"),
          text_tokens: int = typer.Option(512, "--text-tokens", help="the rater's text budget in tokens")):
    """Run the scoring service: POST /v1/score (and /v1/rate with --rater), GET /healthz, /v1/models, /metrics."""
    from pipeline.scoring.service import ServiceLimits
    from pipeline.scoring.service import serve as run_service
    run_service(engine, model, host=host, port=port, token=token,
                limits=ServiceLimits(max_documents_per_request=max_docs, max_bytes_per_document=max_doc_bytes),
                engine_options=dict(device=device, dtype=dtype, max_tokens=max_tokens, truncation=truncation,
                                    stride=stride),
                rater_options=dict(decoding=decoding, text_tokens=text_tokens) if rater else None)
