"""A rehearsal of the reference recipe on a CPU: recipes/qwen3-4b-base-grpo.yaml as shipped, except

* the model: a tiny random Qwen3 built here (SmolLM2's tokenizer), not Qwen3-4B-Base;
* the dataset: a parquet file in open-r1/DAPO-Math-17k-Processed's schema (its create_dataset.py keeps
  prompt, solution, data_source, source_prompt, ability, reward_model, extra_info);
* the step count (2), and the CUDA-only switches: optim adamw_8bit (bitsandbytes) -> adamw_torch;
  use_vllm falls back to transformers generation with a warning, fast_inference is Unsloth's only.

It goes through the CLI: train -> eval -> export --merged -> reload with plain transformers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from reasontune import cli
from reasontune.config import load_yaml

pytestmark = pytest.mark.slow  # ~2000-token completions (max_seq_length 2048 less the prompt), 2 steps

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "qwen3-4b-base-grpo.yaml"
CPU_ONLY = ["--set", "grpo.optim=adamw_torch"]


@pytest.fixture(scope="module")
def tiny_qwen3(tiny_model_dir, tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    out = tmp_path_factory.mktemp("tiny-qwen3")
    Qwen3ForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def dapo_parquet(path: Path, n: int = 240) -> Path:
    """Rows shaped like open-r1/DAPO-Math-17k-Processed (config en); enough for the default 200 held out."""
    import pandas as pd

    rows = []
    for i in range(n):
        a, b = 3 + i, 5 + 2 * i
        text = f"Solve the following math problem. What is {a} + {b}?"
        rows.append({"prompt": text, "solution": str(a + b), "data_source": "math_dapo",
                     "source_prompt": [{"content": text, "role": "user"}], "ability": "MATH",
                     "reward_model": {"ground_truth": str(a + b), "style": "rule-lighteval/MATH_v2"},
                     "extra_info": {"index": f"rehearsal-{i}"}})
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_reference_recipe_rehearsal(tmp_path, tiny_qwen3, caplog, capsys, one_thread):
    import importlib

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = dapo_parquet(tmp_path / "dapo.parquet")
    run = tmp_path / "run"
    changes = ["--model", str(tiny_qwen3), "--dataset", str(data), "--set", "data.config_name=null",
               "--max-steps", "2"]
    with caplog.at_level(logging.INFO):
        assert cli.main(["train", "--config", str(RECIPE), *changes, *CPU_ONLY, "--output-dir", str(run)]) == 0
    assert json.loads((run / "status.json").read_text())["status"] == "done"
    assert "generating with transformers" in caplog.text  # use_vllm: true, no vllm here
    saved = json.loads((run / "reasontune_config.json").read_text())
    recipe = load_yaml(RECIPE)
    # The run trained the recipe's settings: everything but what the test changed.
    for section in ("lora", "format", "rewards"):
        assert saved[section] == recipe.to_dict()[section], section
    want_grpo = {**recipe.to_dict()["grpo"], "max_steps": 2, "optim": "adamw_torch"}
    assert saved["grpo"] == want_grpo
    assert {k: saved["model"][k] for k in ("max_seq_length", "chat_template", "load_in_4bit")} == \
        {"max_seq_length": 2048, "chat_template": "reasoning", "load_in_4bit": False}

    # The GRPOConfig built from it, as on a GPU less the CUDA-only switches.
    args = importlib.import_module("reasontune.stages.train").grpo_args(recipe, 100)
    assert (args.learning_rate, args.weight_decay, args.lr_scheduler_type, args.per_device_train_batch_size,
            args.num_generations, args.temperature, args.min_p, args.loss_type, args.beta) == \
        (5e-6, 0.01, "linear", 4, 4, 1.0, 0.1, "dapo", 0.0)
    assert args.max_completion_length == 2048 - 100 and args.gradient_checkpointing

    # the adapter records the budget GRPO resolved from the recipe's null (max_seq_length - the longest prompt)
    from reasontune.export.portable import read_format

    budget = read_format(run / "adapter").grpo.max_completion_length
    assert budget is not None and 1800 < budget < 2048
    assert cli.main(["eval", "--run", str(run), "--dataset", str(data), "--limit", "2", "--max-new-tokens", "8",
                     "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    recs = [json.loads(x) for x in (tmp_path / "eval" / "completions.jsonl").read_text().splitlines()]
    assert (metrics["n"], metrics["max_new_tokens"], len(recs)) == (2, 8, 2)
    assert metrics["accuracy"] == sum(r["correct"] for r in recs) / 2
    assert metrics["rewards"] == [r["name"] for r in saved["resolved_rewards"]]
    assert all(set(r["scores"]) == set(metrics["rewards"]) for r in recs)

    assert cli.main(["export", str(run), "--merged", "--dtype", "float32", "--out", str(tmp_path / "merged")]) == 0
    capsys.readouterr()
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert model.config.model_type == "qwen3"
    text = tok.apply_chat_template([{"role": "system", "content": recipe.format.system_prompt},
                                    {"role": "user", "content": "What is 2 + 2?"}],
                                   tokenize=False, add_generation_prompt=True)
    assert text.endswith("<start_working_out>")  # the recipe's chat template travelled with the model
    with torch.no_grad():
        out = model.generate(**tok(text, return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert out.shape[1] > len(tok(text)["input_ids"])
