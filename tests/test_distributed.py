"""Scale-out: 2 processes (gloo, CPU) through `accelerate launch` run GRPO and stay in sync.

Each rank trains the tiny model for 2 GRPO steps on different prompts, then writes a hash of its
LoRA weights; DDP must have averaged the gradients, so both ranks end with identical weights, and
those weights must differ from the start (a length reward gives every group non-zero advantages).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.slow  # two processes through accelerate launch

WORKER = textwrap.dedent('''
    import hashlib, json, os, sys
    import torch
    from reasontune.config import from_dict
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.train import train

    model_dir, out_dir = sys.argv[1], sys.argv[2]
    rank = int(os.environ["RANK"])
    cfg = from_dict({
        "model": {"name": model_dir, "max_seq_length": 256},
        "lora": {"r": 4, "alpha": 8},
        "data": {"dataset": "procedural:arithmetic", "train_size": 64, "test_size": 4, "max_prompt_quantile": None},
        "rewards": {"names": ["format_approx", "length_reward:reward"]},
        "grpo": {"per_device_train_batch_size": 2, "num_generations": 2, "max_completion_length": 8,
                 "max_steps": 2, "learning_rate": 1e-2, "save_steps": 1000, "logging_steps": 1,
                 "extra": {"ddp_backend": "gloo"}},
        "output_dir": os.path.join(out_dir, "run"),
    })

    def lora_hash(model):
        h = hashlib.sha256()
        for name, p in sorted(model.named_parameters()):
            if "lora_" in name:
                h.update(name.encode())
                h.update(p.detach().to(torch.float32).cpu().numpy().tobytes())
        return h.hexdigest()

    torch.manual_seed(1000 + rank)  # different LoRA init per rank: DDP must broadcast rank 0's
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    start = lora_hash(model)
    result = train(cfg, model=model, tokenizer=tok)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"start": start, "end": lora_hash(model), "world": os.environ.get("WORLD_SIZE"),
                   "step": result["summary"]["global_step"]}, f)
''')

LENGTH_REWARD = textwrap.dedent('''
    def reward(completions, **kwargs):
        """Longer completions score higher: non-zero advantages in (almost) every group."""
        return [float(len(c if isinstance(c, str) else c[-1]["content"])) for c in completions]
''')


def test_two_process_grpo_keeps_ranks_in_sync(tiny_model_dir, tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    (tmp_path / "length_reward.py").write_text(LENGTH_REWARD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "ACCELERATE_USE_CPU": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
           str(tmp_path / "worker.py"), str(tiny_model_dir), str(tmp_path)]
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=int(os.environ.get("RT_DIST_TIMEOUT", "300")))
    assert proc.returncode == 0, f"accelerate launch failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == "2" and r["step"] == 2 for r in ranks), ranks
    assert ranks[0]["end"] == ranks[1]["end"], "ranks ended with different LoRA weights"
    assert ranks[0]["end"] != ranks[0]["start"], "training did not change the LoRA weights"
    assert ranks[0]["start"] != ranks[1]["start"], "per-rank init was meant to differ (DDP syncs it)"
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    print(f"2-process GRPO: {time.time() - t0:.1f}s")


PROMPT_LOG = textwrap.dedent('''
    import json, os

    def reward(completions, prompts=None, **kwargs):
        """Records the prompts this rank was given (TRL passes them), scores by length."""
        with open(os.path.join(os.environ["PROMPT_LOG_DIR"], f"rank{os.environ['RANK']}.jsonl"), "a") as f:
            for p in prompts or []:
                f.write(json.dumps(p if isinstance(p, str) else p[-1]["content"]) + "\\n")
        return [float(len(c if isinstance(c, str) else c[-1]["content"])) for c in completions]
''')


# Rank 1 reaches its overwrite check (if it has one) only after rank 0 wrote the run's config: the
# interleaving in which rank 1 refused the folder rank 0 had just created ("already holds a run").
# Without this hook the test would pass or fail by the ranks' timing.
SLOW_RANK1 = textwrap.dedent('''
    import os, time
    if os.environ.get("RANK") == "1":
        import reasontune.runs.folder as rf
        _check = rf.check_output_dir

        def check_output_dir(cfg):
            config = os.path.join(os.environ["RUN_DIR"], "reasontune_config.json")
            deadline = time.time() + 240
            while not os.path.exists(config) and time.time() < deadline:
                time.sleep(0.2)
            return _check(cfg)

        rf.check_output_dir = check_output_dir
''')


def test_two_process_cli_run_without_overwrite(tiny_model_dir, tmp_path):
    """`accelerate launch -m reasontune.cli train` into a new folder: rank 0 sets up the run folder while
    rank 1 waits (before, rank 1's overwrite check found the folder rank 0 had just created), and the
    ranks train on different prompts."""
    (tmp_path / "prompt_log.py").write_text(PROMPT_LOG)
    (tmp_path / "sitecustomize.py").write_text(SLOW_RANK1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "ACCELERATE_USE_CPU": "1", "PROMPT_LOG_DIR": str(tmp_path), "RUN_DIR": str(tmp_path / "run")}
    env.pop("WORLD_SIZE", None)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29519",
           "-m", "reasontune.cli", "train", "--model", str(tiny_model_dir), "--dataset", "procedural:arithmetic",
           "--reward", "format_approx", "--reward", "prompt_log:reward", "--max-steps", "2",
           "--output-dir", str(run), "--set", "grpo.num_generations=2", "--set", "grpo.per_device_train_batch_size=2",
           "--set", "grpo.max_completion_length=8", "--set", "data.train_size=64", "--set", "data.test_size=4",
           "--set", "data.max_prompt_quantile=null", "--set", "lora.r=4", "--set", "model.max_seq_length=256",
           "--set", "grpo.save_steps=1000", "--set", "grpo.extra={ddp_backend: gloo}"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=int(os.environ.get("RT_DIST_TIMEOUT", "300")))
    assert proc.returncode == 0, f"accelerate launch failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "done" and status["global_step"] == 2, status
    assert (run / "adapter" / "adapter_config.json").is_file()
    seen = [set((tmp_path / f"rank{r}.jsonl").read_text().splitlines()) for r in (0, 1)]
    assert seen[0] and seen[1] and not seen[0] & seen[1], "the ranks were given the same prompts"
