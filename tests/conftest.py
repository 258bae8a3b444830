"""Shared fixtures: the embedded SmolLM2 (converted once per machine) and a tiny random Llama
that uses SmolLM2's tokenizer, for fast trainer tests. No hub access anywhere."""

from __future__ import annotations

import re

import pytest


@pytest.fixture(scope="session")
def smol_dir():
    from reasontune.models import ensure_embedded

    return ensure_embedded("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model_dir(smol_dir, tmp_path_factory):
    """A 2-layer random Llama (hidden 64) with the real SmolLM2 tokenizer, saved as a folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(smol_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one torch thread is much faster than two fighting over a busy 2-core CPU."""
    from reasontune.models.speed import threads

    with threads(1):
        yield


@pytest.fixture(scope="session")
def bwrap():
    """The bubblewrap sandbox (rewards/sandbox.py), checked by running a probe program; skips without it."""
    from reasontune.config import ConfigError
    from reasontune.rewards import sandbox

    try:
        return sandbox.resolve("bwrap")
    except ConfigError as e:
        pytest.skip(f"bubblewrap is not usable here ({e}); `make test` installs it")


@pytest.fixture
def hub_from_file(monkeypatch):
    """hub_from_file(hub_id, path) -> calls: datasets.load_dataset(hub_id, ...) reads the local parquet
    `path` instead (no hub here), so a hub id goes through exactly the real loading code; `calls`
    collects the (id, config, split) asked for."""
    import datasets

    real = datasets.load_dataset

    def install(hub_id, path):
        calls = []

        def fake(path_or_id, name=None, **kw):
            if path_or_id == hub_id:
                calls.append((path_or_id, name, kw.get("split")))
                return real("parquet", data_files=str(path), split="train")
            return real(path_or_id, name, **kw)

        monkeypatch.setattr(datasets, "load_dataset", fake)
        return calls

    return install


def tiny_demo_updates(model_dir) -> dict:
    """The demo recipe shrunk to the tiny model for the compare's end-to-end tests: a 2-example warm-up, 2 x 2
    GRPO completions of 4 tokens, a step cap only the budget reaches."""
    return {"model.name": str(model_dir), "lora.r": 2, "lora.alpha": 4, "data.train_size": 16,
            "data.test_size": 2, "eval.limit": 2, "warmup.examples": 2, "warmup.batch_size": 2, "warmup.epochs": 1.0,
            "grpo.max_steps": 10_000, "grpo.per_device_train_batch_size": 2, "grpo.num_generations": 2,
            "grpo.max_completion_length": 4, "grpo.logging_steps": 1, "model.max_seq_length": 256}


STEP = re.compile(r"^(-?\d+) ([-+*/]) (-?\d+) = (-?\d+)$")
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def replay(worked: str) -> list[tuple[int, str, int, int]]:
    """Parse and check each 'a op b = c' line of a procedural worked solution; division must be exact
    (test_data_procedural, test_stories)."""
    steps = []
    for line in worked.splitlines():
        m = STEP.match(line)
        assert m, f"malformed step {line!r}"
        a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
        if op == "/":
            assert b != 0 and a % b == 0 and a // b == c, line
        else:
            assert OPS[op](a, b) == c, line
        steps.append((a, op, b, c))
    return steps
