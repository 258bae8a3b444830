"""The importance matrix llama.cpp's quantizer weighs rounding errors with (what `llama-imatrix` computes),
measured in PyTorch on the merged model, on calibration text from the run's own training data.

For every weight matrix W of a linear layer y = W x, the quantizer minimises sum_j imatrix[j] * err_j^2 over
each row's input columns j, where imatrix[j] is the mean over calibration tokens of x_j^2. Without one, every
column counts the same (llama.cpp's default: sum x^2 of the weights themselves). The text is the run's
training problems rendered with the run's chat template plus the reference worked solution in the run's
format, exactly the SFT warm-up's rows (data.worked.sft_rows), so the columns that matter are those the model uses
on its own task.
"""

from __future__ import annotations

import logging
from pathlib import Path

from reasontune.config import ConfigError, DataConfig
from reasontune.export.llamacpp import KV_CHUNKS, KV_DATASET, KV_ENTRIES, QUANT_TYPES

logger = logging.getLogger(__name__)

# ~100 tokens a row on the demo: ~13k tokens, ~30 s through a 135M model on 2 CPU cores. llama-imatrix's
# usual calibration is ~100 chunks of 512 tokens; our rows are short but all of the run's kind.
CALIBRATION_ROWS = 128
BATCH_ROWS = 16


def trained_data(run_dir: str | Path, cfg) -> tuple[DataConfig | None, str]:
    """(the data config the run trained on, '') or (None, why it is not recorded). `cfg` is the run config
    export.load_merged read from the same folder; an older adapter folder records only the format, and its
    cfg.data would be the defaults, not what it trained on."""
    from reasontune.export.portable import ADAPTER_FILE, has_run_config
    from reasontune.runs.folder import CONFIG_FILE

    run_dir = Path(run_dir)
    if (run_dir / CONFIG_FILE).is_file() or has_run_config(run_dir / "adapter"):
        return cfg.data, ""
    return None, (f"{run_dir} records no training data (no {CONFIG_FILE}, and {run_dir / 'adapter' / ADAPTER_FILE} "
                  "has no run_config)")


def calibration_texts(data: DataConfig, tok, cfg, n: int = CALIBRATION_ROWS) -> tuple[list[str], str]:
    """(the first `n` training rows as the SFT warm-up renders them: prompt + worked solution in the format,
    or the prompts alone when the data has no worked solutions; which of the two)."""
    from reasontune.data import build_datasets
    from reasontune.models.prompting import render_prompt
    from reasontune.data.worked import count_worked, sft_rows

    train = build_datasets(data, cfg.format, tokenizer=tok)["train"]
    if count_worked(train):
        return [r["prompt"] + r["completion"] for r in sft_rows(train, tok, cfg, n)], "prompt + worked solution"
    logger.info("imatrix: %s has no worked solutions; calibrating on its prompts alone", data.dataset)
    return [render_prompt(tok, r["prompt"], cfg.format) for r in train.select(range(min(n, len(train))))], "prompts"


def _linear_names(model) -> dict[str, str]:
    """HF module name -> the GGUF name export.write_gguf gives its weight. A tied lm_head is written as
    token_embd.weight; llama.cpp's output matmul reads that tensor, so its imatrix entry goes there."""
    import torch

    from reasontune.export.gguf import gguf_tensor_names

    names = gguf_tensor_names(model.config)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    out = {}
    for mod_name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear):
            continue
        hf = "model.embed_tokens.weight" if tied and mod_name == "lm_head" else f"{mod_name}.weight"
        gguf_name = names.get_name(hf, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ConfigError(f"imatrix: no GGUF name for {hf!r}; export without --imatrix")
        out[mod_name] = gguf_name
    return out


def importance_matrix(model, tok, texts: list[str], max_len: int = 512) -> tuple[dict, int]:
    """({GGUF tensor name: float32 array of the input width}, calibration tokens): the mean over the
    tokens of each linear layer's squared input, per input column. Pad positions are not counted."""
    import numpy as np
    import torch

    names = _linear_names(model)
    mods = dict(model.named_modules())
    sums = {g: torch.zeros(mods[m].in_features, dtype=torch.float64) for m, g in names.items()}
    mask: list = [None]

    def add(gguf_name, x):
        sums[gguf_name] += ((x.detach().to(torch.float64) ** 2) * mask[0][..., None]).sum(dim=(0, 1))

    decoder = model.get_decoder()
    handles = []
    for m, g in names.items():
        if m == "lm_head":  # its input is the decoder's final norm: running the decoder alone skips the logits
            handles.append(decoder.norm.register_forward_hook(lambda _m, _a, out, g=g: add(g, out)))
        else:
            handles.append(mods[m].register_forward_pre_hook(lambda _m, args, g=g: add(g, args[0])))
    ids = [tok(t, add_special_tokens=False)["input_ids"][:max_len] for t in texts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together: little padding
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    tokens = 0
    try:
        with torch.no_grad():
            for start in range(0, len(order), BATCH_ROWS):
                batch = [ids[i] for i in order[start:start + BATCH_ROWS]]
                width = max(len(b) for b in batch)
                inp = torch.tensor([b + [pad] * (width - len(b)) for b in batch])
                att = torch.tensor([[1] * len(b) + [0] * (width - len(b)) for b in batch])
                mask[0] = att.to(torch.float64)
                decoder(input_ids=inp, attention_mask=att, use_cache=False)
                tokens += int(att.sum())
    finally:
        for h in handles:
            h.remove()
    return {g: (s / max(tokens, 1)).to(torch.float32).numpy().astype(np.float32) for g, s in sums.items()}, tokens


def calibrate(run_dir: str | Path, model, tok, cfg, n: int = CALIBRATION_ROWS) -> tuple[dict | None, dict]:
    """(imatrix, {'rows', 'tokens', 'dataset'}) on the run's training data, or (None, {'reason': ...}) when that
    data cannot be had: the file is then quantized without one, as before."""
    data, why = trained_data(run_dir, cfg)
    if data is None:
        logger.warning("imatrix: quantizing without an importance matrix: %s", why)
        return None, {"reason": why}
    try:
        texts, what = calibration_texts(data, tok, cfg, n)
    except Exception as e:  # a hub set offline, a moved local file, ...: the export itself still works
        why = f"the training data {data.dataset!r} could not be loaded ({type(e).__name__}: {e})"
        logger.warning("imatrix: quantizing without an importance matrix: %s", why)
        return None, {"reason": why}
    matrix, tokens = importance_matrix(model, tok, texts, cfg.model.max_seq_length)
    info = {"rows": len(texts), "tokens": tokens,
            "dataset": f"{data.dataset} ({data.split} split, first {len(texts)} rows, {what})"}
    logger.info("imatrix: %d entries from %d training rows of %s (%d tokens)", len(matrix), len(texts),
                data.dataset, tokens)
    return matrix, info


def for_export(run_dir, model, tok, cfg, kind: str, enabled: bool) -> tuple[dict | None, dict] | None:
    """calibrate() for the llama.cpp quant types when `enabled`; None for the types our converter writes."""
    if kind not in QUANT_TYPES:
        return None
    if not enabled:
        logger.info("imatrix: off (no --imatrix): %s is quantized with llama.cpp's default weighting", kind)
        return None
    return calibrate(run_dir, model, tok, cfg)


def imatrix_kv(matrix: dict | None, info: dict) -> dict:
    """The metadata llama-quantize writes for an imatrix, which model cards and `llama-cli` show."""
    if not matrix:
        return {}
    return {KV_DATASET: info["dataset"], KV_ENTRIES: len(matrix), KV_CHUNKS: info["rows"]}
