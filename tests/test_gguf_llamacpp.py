"""The GGUF export in llama.cpp itself (llama-cpp-python; `make test-gguf` builds a venv with it): it loads,
its chat template renders the training prompt, its greedy tokens are transformers' on the merged folder, its
EOS is the model's and it stops on it, and q4_k_m comes out of llama.cpp's quantizer. The lane's llama.cpp is built
without AMX (issue 36: its AMX path segfaults on quantized files), checked first, and q8_0 and q4_k_m files generate
on this host whatever its CPU.

The model is a random tiny Llama with SmolLM2's real tokenizer, hidden 256 so that the k-quants apply to its
matrices, with a wide init so that greedy margins stand above f32 rounding."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from reasontune import cli

llama_cpp = pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (make test-gguf installs it)")

FORMAT = {"reasoning_start": "<think>", "reasoning_end": "</think>", "solution_start": "<answer>",
          "solution_end": "</answer>",
          "system_prompt": "Solve the problem. Write your working between <think> and </think>, then the final "
                           "answer between <answer> and </answer>."}
QUESTIONS = ["What is 12 + 30?", "Ava has 9 coins and loses 4. How many are left?", "What is 7 + 8?"]


def test_the_lanes_llama_cpp_was_built_without_amx():
    """First, so that on an AMX host a build with the AMX path fails here with the fix named, not later with a
    segfault: the Makefile builds .venv-gguf with amx.NO_AMX_FLAGS. (On a CPU without AMX, -march=native never
    compiles it in, so this holds there whatever the flags; tests/test_amx.py checks the Makefile itself.)"""
    from reasontune.export.amx import CMAKE_ARGS, build_has_amx, has_amx

    info = llama_cpp.llama_print_system_info()
    assert b"CPU : " in info and b"SSE3 = 1" in info, info  # the feature list the check reads is there
    print(f"host has AMX: {has_amx()}; llama.cpp: {info.decode().strip()}")
    assert not build_has_amx(llama_cpp), (
        f"this llama-cpp-python was built with AMX ({info.decode()}); on this AMX CPU quantized files segfault in "
        f"ggml_backend_amx_mul_mat (issue 36). Rebuild .venv-gguf with the Makefile (CMAKE_ARGS=\"{CMAKE_ARGS}\").")


@pytest.fixture(scope="module")
def wide_run(tiny_model_dir, tmp_path_factory):
    """A run folder (config + adapter with a non-zero LoRA) on a random Llama of hidden 256."""
    return _tiny_run(tiny_model_dir, tmp_path_factory.mktemp("gguf-llamacpp"), hidden=256)


def _tiny_run(tiny_model_dir, root, hidden: int):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from reasontune.config import from_dict
    from reasontune.models import load_model_and_tokenizer
    from reasontune.runs.folder import RunFolder

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    mcfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=512, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, tie_word_embeddings=True, initializer_range=0.2)
    LlamaForCausalLM(mcfg).save_pretrained(root / "base")  # a wide init: greedy margins well above rounding
    tok.save_pretrained(root / "base")
    cfg = from_dict({"model": {"name": str(root / "base")}, "format": FORMAT, "lora": {"r": 4, "alpha": 8},
                     "output_dir": str(root / "run")})
    RunFolder(root / "run").start(cfg)
    peft, ptok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    peft.save_pretrained(root / "run" / "adapter")
    ptok.save_pretrained(root / "run" / "adapter")
    return root / "run", cfg


@pytest.fixture(scope="module")
def exports(wide_run, tmp_path_factory):
    """`reasontune export RUN --merged --gguf --gguf-type T` for f32, f16, q8_0 and q4_k_m, into one folder."""
    run, _ = wide_run
    out = tmp_path_factory.mktemp("gguf-out") / "merged"
    results = {}
    for kind in ("f32", "f16", "q8_0", "q4_k_m"):
        assert cli.main(["export", str(run), "--merged", "--dtype", "float32", "--gguf", "--gguf-type", kind,
                         "--out", str(out)]) == 0
        results[kind] = out / f"model-{kind}.gguf"
    return out, results


def _llama(path):
    return llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=2, verbose=False, seed=0)


def _transformers_greedy(folder, question: str, max_new: int) -> list[int]:
    """Greedy token ids from a bare user message, plain transformers on the merged folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    enc = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new, min_new_tokens=max_new, do_sample=False)
    return out[0, enc["input_ids"].shape[1]:].tolist()


def test_q4_k_m_comes_from_llama_cpps_quantizer_and_loads(exports):
    import gguf

    out, paths = exports
    q4, f16 = paths["q4_k_m"], paths["f16"]
    assert q4.is_file() and not list(out.glob("*.f16")), "the intermediate f16 file is left behind"
    llm = _llama(q4)
    assert llm.metadata["general.file_type"] == str(llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M)
    types = {t.tensor_type.name for t in gguf.GGUFReader(q4).tensors}
    assert "Q4_K" in types, types
    assert q4.stat().st_size < 0.5 * f16.stat().st_size
    print(f"f16 {f16.stat().st_size / 1e6:.1f} MB, q4_k_m {q4.stat().st_size / 1e6:.1f} MB, "
          f"tensor types {sorted(types)}")


GENERATE = """
import sys, llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, n_threads=2, verbose=False, seed=0)
r = llm.create_chat_completion(messages=[{"role": "user", "content": "What is 12 + 30?"}], temperature=0.0,
                               max_tokens=8)
print(r["usage"]["completion_tokens"])
"""


@pytest.mark.parametrize("kind", ["q8_0", "q4_k_m"])
def test_quantized_files_generate_on_this_host(exports, kind):
    """The files issue 36 saw crash on an AMX CPU (q8_0 and q4_k_m, the weights llama.cpp's AMX buffer takes)
    answer here, in a child process so that a segfault fails this test with its cause instead of ending pytest."""
    from reasontune.export.amx import has_amx

    _, paths = exports
    r = subprocess.run([sys.executable, "-c", GENERATE, str(paths[kind])], capture_output=True, text=True,
                       timeout=300)
    where = "an AMX" if has_amx() else "a non-AMX"
    assert r.returncode == 0, (f"{kind} on {where} CPU: exit {r.returncode} (-11 is the segfault of issue 36, "
                               f"llama.cpp's AMX path)\n{r.stderr[-2000:]}")
    assert r.stdout.split()[-1] == "8", r.stdout


def test_the_files_chat_template_renders_the_training_prompt(exports, wide_run):
    from transformers import AutoTokenizer

    from reasontune.models.prompting import render_prompt

    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    out, paths = exports
    _, cfg = wide_run
    llm = _llama(paths["f16"])
    tok = AutoTokenizer.from_pretrained(out)
    live = AutoTokenizer.from_pretrained(wide_run[0].parent / "base")  # the template training rendered with
    for q in QUESTIONS:
        msgs = [{"role": "user", "content": q}]
        training = render_prompt(live, [{"role": "system", "content": cfg.format.prompt}, *msgs], cfg.format)
        assert training.endswith("<think>") and FORMAT["system_prompt"] in training
        # what create_chat_completion renders: the file's template through llama-cpp-python's Jinja formatter
        fmt = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"], eos_token=tok.eos_token,
                                  bos_token=tok.bos_token or "")
        assert fmt(messages=msgs).prompt == training
        assert tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == training
        # and llama.cpp tokenizes it as transformers does
        assert llm.tokenize(training.encode(), add_bos=False, special=True) == tok(training)["input_ids"]


def test_greedy_answers_match_transformers(exports):
    """The first 16 greedy token ids from the file's own prompt, llama.cpp (f32 file) against transformers."""
    from transformers import AutoTokenizer

    out, paths = exports
    llm = _llama(paths["f32"])
    tok = AutoTokenizer.from_pretrained(out)
    eos = tok.eos_token_id
    for q in QUESTIONS:
        want = _transformers_greedy(out, q, 16)
        prompt = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        got = []
        llm.reset()
        for t in llm.generate(ids, temp=0.0, logits_processor=[lambda _ids, s: _no_eos(s, eos)]):
            got.append(t)
            if len(got) == 16:
                break
        assert got == want, (q, got, want)


def _no_eos(scores, eos):
    scores[eos] = -float("inf")  # as min_new_tokens does on the transformers side
    return scores


def test_it_stops_on_eos(exports):
    """With EOS made the argmax (a logit bias), create_chat_completion ends on it at once, as a client sees it."""
    from transformers import AutoTokenizer

    out, paths = exports
    eos = AutoTokenizer.from_pretrained(out).eos_token_id
    llm = _llama(paths["f16"])
    free = llm.create_chat_completion(messages=[{"role": "user", "content": QUESTIONS[0]}], temperature=0.0,
                                      max_tokens=8)
    assert free["choices"][0]["finish_reason"] == "length"  # a random model runs to the limit
    r = llm.create_chat_completion(messages=[{"role": "user", "content": QUESTIONS[0]}], temperature=0.0,
                                   max_tokens=8, logit_bias={eos: 100.0})
    assert r["choices"][0]["finish_reason"] == "stop" and r["usage"]["completion_tokens"] <= 1, r


def test_llama_cpps_eos_is_the_models(exports):
    out, paths = exports
    gen = json.loads((out / "generation_config.json").read_text())
    eos = gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]]
    llm = _llama(paths["f16"])
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    assert llama_cpp.llama_vocab_eos(vocab) == eos[0]
    assert all(llama_cpp.llama_vocab_is_eog(vocab, e) for e in eos)


def _builtin_render(template: str, messages: list[dict]) -> str:
    """llama.cpp's built-in template detection (what it uses without --jinja) on the file's template."""
    arr = (llama_cpp.llama_chat_message * len(messages))(
        *[llama_cpp.llama_chat_message(m["role"].encode(), m["content"].encode()) for m in messages])
    buf = bytes(8192)
    n = llama_cpp.llama_chat_apply_template(template.encode(), arr, len(messages), True, buf, len(buf))
    assert 0 < n < len(buf), n
    return buf[:n].decode()


def test_without_jinja_llama_cpp_drops_the_training_prompt_and_the_card_says_so(exports, wide_run):
    """The card's `--jinja` note is needed: llama.cpp's built-in (chatml) template loses the system prompt
    and the <think> prefill. If llama.cpp ever reproduced the training prompt, this fails and the note can go."""
    from transformers import AutoTokenizer

    from reasontune.models.prompting import render_prompt

    out, paths = exports
    _, cfg = wide_run
    llm = _llama(paths["f16"])
    msgs = [{"role": "user", "content": QUESTIONS[0]}]
    builtin = _builtin_render(llm.metadata["tokenizer.chat_template"], msgs)
    live = AutoTokenizer.from_pretrained(wide_run[0].parent / "base")  # the template training rendered with
    training = render_prompt(live, [{"role": "system", "content": cfg.format.prompt}, *msgs], cfg.format)
    print("llama.cpp built-in:", repr(builtin))
    assert builtin.startswith("<|im_start|>user") and builtin.endswith("<|im_start|>assistant\n")  # plain chatml
    assert FORMAT["system_prompt"] not in builtin and not builtin.endswith("<think>") and builtin != training
    card = (out / "README.md").read_text()
    assert "--jinja" in card and "model-f16.gguf" in card and "model-q4_k_m.gguf" in card


# ---- the importance matrix (imatrix.py) -------------------------------------------------------------------
def test_imatrix_has_one_entry_per_linear_weight_named_as_the_file(exports, wide_run):
    """Every 2-D tensor of the f16 file (the linears, and token_embd: the tied output matmul reads it) has an
    entry of its input width (GGUF ne[0]), positive and finite, measured on the run's training rows."""
    import gguf
    import numpy as np

    from reasontune.stages.export import load_merged
    from reasontune.export.imatrix import CALIBRATION_ROWS, calibrate

    run, _ = wide_run
    _, paths = exports
    model, tok, cfg = load_merged(run)
    matrix, info = calibrate(run, model, tok, cfg)
    widths = {t.name: int(t.shape[0]) for t in gguf.GGUFReader(paths["f16"]).tensors if len(t.shape) == 2}
    assert set(matrix) == set(widths), set(matrix) ^ set(widths)
    assert len(matrix) == 7 * 2 + 1
    for name, v in matrix.items():
        assert v.dtype == np.float32 and v.shape == (widths[name],), (name, v.shape)
        assert np.isfinite(v).all() and (v > 0).all(), name
    assert info["rows"] == CALIBRATION_ROWS and info["tokens"] > 20 * info["rows"], info
    assert "procedural:arithmetic" in info["dataset"]


def test_imatrix_flag_changes_the_quantized_bytes_the_file_still_generates_and_default_has_none(
        exports, wide_run, tmp_path, capsys):
    import gguf
    import numpy as np

    from reasontune.export.imatrix import KV_CHUNKS

    run, _ = wide_run
    out, paths = exports
    capsys.readouterr()
    # the fixture's q4_k_m is the default export: no importance matrix (opt-in, see docs/export.md)
    assert cli.main(["export", str(run), "--gguf", "--gguf-type", "q4_k_m", "--imatrix", "--out",
                     str(tmp_path / "im")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["imatrix"]["rows"] > 0
    im_path = tmp_path / "im" / "model-q4_k_m.gguf"
    with_im, plain = gguf.GGUFReader(im_path), gguf.GGUFReader(paths["q4_k_m"])
    assert KV_CHUNKS in with_im.fields and KV_CHUNKS not in plain.fields
    a = {t.name: t for t in with_im.tensors}
    b = {t.name: t for t in plain.tensors}
    assert set(a) == set(b)
    assert all(a[n].tensor_type == b[n].tensor_type for n in a)  # the same mix of types, other rounding
    quantized = [n for n in a if a[n].tensor_type.name in ("Q4_K", "Q5_K", "Q6_K", "Q5_0", "Q5_1", "Q4_0")]
    assert quantized and all(not np.array_equal(a[n].data, b[n].data) for n in quantized), quantized
    llm = _llama(im_path)
    got = llm.create_chat_completion(messages=[{"role": "user", "content": QUESTIONS[0]}], temperature=0.0,
                                     max_tokens=8)
    assert got["usage"]["completion_tokens"] == 8
    card = (tmp_path / "im" / "README.md").read_text()
    assert "`model-q4_k_m.gguf`: quantized by llama.cpp with an importance matrix from 128 training rows" in card
    assert "importance matrix" not in (out / "README.md").read_text()


def test_imatrix_without_the_training_data_quantizes_without_one(wide_run, tmp_path, caplog):
    """A run whose data cannot be loaded (here: a moved local file) still exports; the log says why."""
    import dataclasses
    import logging

    from reasontune.export.imatrix import calibrate
    from reasontune.runs.folder import RunFolder

    _, cfg = wide_run
    moved = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset=str(tmp_path / "gone.jsonl")))
    RunFolder(tmp_path / "run").start(moved)
    with caplog.at_level(logging.WARNING, logger="reasontune.export.imatrix"):
        matrix, info = calibrate(tmp_path / "run", None, None, moved)
    assert matrix is None and "could not be loaded" in info["reason"] and "gone.jsonl" in info["reason"]
    assert "without an importance matrix" in caplog.text
    matrix, info = calibrate(tmp_path / "nothing", None, None, moved)  # no config: the data is not recorded
    assert matrix is None and "records no training data" in info["reason"]


def test_tensor_types_override_llama_cpps_choice_for_the_matching_tensors(exports, tmp_path):
    """quantize(tensor_types=...) is `llama-quantize --tensor-type`: the matching tensors take the asked type,
    the rest keep the mix's own; a name ggml does not know is refused before the quantizer runs."""
    import gguf

    from reasontune.config import ConfigError
    from reasontune.export.llamacpp import quantize

    _, paths = exports
    dst = quantize(paths["f16"], tmp_path / "mix.gguf", "q4_k_m", tensor_types={"ffn_down": "q8_0"})
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(dst).tensors}
    down = {n: t for n, t in types.items() if "ffn_down" in n}
    assert down and set(down.values()) == {"Q8_0"}, down
    plain = {t.name: t.tensor_type.name for t in gguf.GGUFReader(paths["q4_k_m"]).tensors}
    assert {plain[n] for n in down} != {"Q8_0"}  # llama.cpp's own mix would not have
    assert all(types[n] == plain[n] for n in types if "ffn_down" not in n)
    assert _llama(dst).tokenize(b"What is 7 + 8?")  # it loads
    with pytest.raises(ConfigError, match="not a ggml type"):
        quantize(paths["f16"], tmp_path / "bad.gguf", "q4_k_m", tensor_types={"ffn_down": "q9_z"})
    assert not (tmp_path / "bad.gguf").exists()


def test_narrow_rows_stay_at_q8_0_by_default_and_llama_cpps_mix_on_request(tiny_model_dir, tmp_path):
    """Hidden 160 (not a multiple of 256, as SmolLM2's 576): llama.cpp's q4_k_m quantizes those matrices to legacy
    5-bit types; reasontune's default keeps them at q8_0 and says so in the file and the card, while ffn_down
    (512-wide rows) keeps the k-quant; --gguf-fallback llama.cpp is llama.cpp's own mix. Both load and answer."""
    import gguf

    from reasontune.export.llamacpp import KV_FALLBACK

    run, _ = _tiny_run(tiny_model_dir, tmp_path, hidden=160)
    files = {}
    for fallback in ("q8_0", "llama.cpp"):
        out = tmp_path / fallback
        assert cli.main(["export", str(run), "--gguf", "--gguf-type", "q4_k_m", "--gguf-fallback", fallback,
                         "--out", str(out)]) == 0
        files[fallback] = out / "model-q4_k_m.gguf"
    ours, theirs = (gguf.GGUFReader(files[k]) for k in ("q8_0", "llama.cpp"))
    narrow = {t.name for t in ours.tensors if len(t.shape) == 2 and int(t.shape[0]) == 160}
    assert len(narrow) == 1 + 2 * 6, narrow  # token_embd + per layer attn_q/k/v/output, ffn_gate/up
    ours_t, theirs_t = ({t.name: t.tensor_type.name for t in r.tensors} for r in (ours, theirs))
    assert {ours_t[n] for n in narrow} == {"Q8_0"}
    assert {theirs_t[n] for n in narrow} - {"Q8_0"}, theirs_t  # llama.cpp's legacy fallback (Q5_0) for some
    assert {ours_t[n] for n in ours_t if "ffn_down" in n} <= {"Q4_K", "Q6_K"}
    assert all(ours_t[n] == theirs_t[n] for n in ours_t if n not in narrow)
    assert "Q8_0 (--gguf-fallback q8_0)" in ours.fields[KV_FALLBACK].contents()
    assert "(llama.cpp's own choice)" in theirs.fields[KV_FALLBACK].contents()  # what llama.cpp wrote, said
    assert "13 of 15 matrices have rows 160 wide" in (tmp_path / "q8_0" / "README.md").read_text()
    for path in files.values():
        assert _llama(path).create_completion("What is 7 + 8?", max_tokens=4)["choices"][0]["text"] is not None


def test_the_card_and_metadata_state_the_types_written_and_a_users_pattern_is_never_overridden(tiny_model_dir,
                                                                                                tmp_path):
    """Issue 35 item 7. A user pattern identical to one of ours (attn_q's) keeps the user's type (it was replaced
    by q8_0), another (attn_k) comes before ours, and the file's metadata and the card say what the file holds,
    read back from its tensors (they said "kept at q8_0" for all 13 narrow matrices)."""
    import re
    from collections import Counter

    import gguf

    from reasontune.export.llamacpp import KV_FALLBACK, KV_TYPES

    run, _ = _tiny_run(tiny_model_dir, tmp_path, hidden=160)
    attn_q = r"^blk\.\d+\.attn_q\.weight$"  # what fallback_overrides writes for attn_q
    out = tmp_path / "mix"
    assert cli.main(["export", str(run), "--gguf", "--gguf-type", "q4_k_m", "--gguf-tensor-type", f"{attn_q}=f16",
                     "--gguf-tensor-type", "attn_k=q5_0", "--out", str(out)]) == 0
    path = out / "model-q4_k_m.gguf"
    reader = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type.name for t in reader.tensors if len(t.shape) == 2}
    narrow = {t.name for t in reader.tensors if len(t.shape) == 2 and int(t.shape[0]) == 160}
    assert {types[n] for n in narrow if "attn_q" in n} == {"F16"}, types  # the user's type, not q8_0
    assert {types[n] for n in narrow if "attn_k" in n} == {"Q5_0"}, types
    assert Counter(types[n] for n in narrow) == {"Q8_0": 9, "F16": 2, "Q5_0": 2}
    fallback = reader.fields[KV_FALLBACK].contents()
    assert fallback == ("13 of 15 matrices have rows 160 wide, not a multiple of 256 as q4_k_m's k-quant types "
                        "need; as written: 9 Q8_0 (--gguf-fallback q8_0), 2 F16 (--gguf-tensor-type "
                        rf"{attn_q}=f16), 2 Q5_0 (--gguf-tensor-type attn_k=q5_0)"), fallback
    stated = reader.fields[KV_TYPES].contents()
    assert stated.startswith("15 matrices as written: ")
    assert Counter({t: int(n) for n, t in re.findall(r"(\d+) (\w+)", stated.split(": ", 1)[1])}) == Counter(
        types.values()), stated
    card = (out / "README.md").read_text()
    assert f"`model-q4_k_m.gguf`: {stated}; {fallback}" in card and "kept at" not in card
    r = subprocess.run([sys.executable, "-c", GENERATE, str(path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.split()[-1] == "8", r.stderr[-2000:]  # the rewritten file still runs
