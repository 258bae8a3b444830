"""A completion that stops at the closing answer marker ends with EOS in the trained sequence, so TRL's
completions/clipped_ratio counts only the rows cut at the token limit."""

from __future__ import annotations

import json

from reasontune.config import from_dict
from reasontune.trainer import close_with_eos


def test_close_with_eos_only_for_rows_that_finished_without_it():
    outs = [([5, 6, 7], False), ([5, 6, 2], False), ([5, 6, 7, 8], True), ([], False)]
    assert close_with_eos(outs, [2, 9]) == [[5, 6, 7, 2], [5, 6, 2], [5, 6, 7, 8], []]


def test_clipped_ratio_counts_only_rows_cut_at_the_limit(tmp_path, tiny_model_dir, monkeypatch):
    """Half the completions stop at </SOLUTION>, half run to max_completion_length: TRL must log a
    clipped ratio of 0.5 and the stopped rows' length (marker + EOS) as the terminated length."""
    from reasontune import generation
    from reasontune.models import load_model_and_tokenizer
    from reasontune.train import train

    cfg = from_dict({"model": {"name": str(tiny_model_dir)}, "lora": {"r": 4, "alpha": 8},
                     "data": {"train_size": 16, "test_size": 4}, "output_dir": str(tmp_path / "run"), "seed": 0,
                     "grpo": {"per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 32,
                              "max_steps": 1, "save_steps": 1000, "skip_zero_variance": False}})
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    answer = tok.encode("12\n<end_working_out>\n<SOLUTION>42</SOLUTION>", add_special_tokens=False)
    filler = tok.encode(" and", add_special_tokens=False)[0]
    assert len(answer) < 32 and tok.eos_token_id not in answer

    def fake_decode(model, rows, pad_id, *, max_new_tokens, sampling, eos, stop, bar=None):
        assert stop(answer), "the trainer must stop at the closing answer marker"
        return [(list(answer), False) if i % 2 == 0 else ([filler] * max_new_tokens, True)
                for i in range(len(rows))]

    monkeypatch.setattr(generation, "_decode_batch", fake_decode)
    train(cfg, model=model, tokenizer=tok)
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["completions/clipped_ratio"] == 0.5
    assert row["completions/mean_terminated_length"] == len(answer) + 1
