"""The GGUF export's Ollama Modelfile renders the training prompt, its card says how to prompt it, and a
llama.cpp quantization without llama-cpp-python is refused before any model loads (no llama.cpp needed)."""

from __future__ import annotations

import json
import sys

import pytest

from reasontune import cli

FORMAT = {"reasoning_start": "<think>", "reasoning_end": "</think>", "solution_start": "<answer>",
          "solution_end": "</answer>", "system_prompt": 'Solve it. Working in <think></think>, "answer" in {{braces}}.'}


def _run_dir(tiny_model_dir, run, **sections):
    """A run folder with an untrained adapter: what `export` reads."""
    from reasontune.config import from_dict
    from reasontune.models import load_model_and_tokenizer
    from reasontune.runs.folder import RunFolder

    cfg = from_dict({"model": {"name": str(tiny_model_dir)}, "format": FORMAT, "lora": {"r": 4, "alpha": 8},
                     "output_dir": str(run), **sections})
    RunFolder(run).start(cfg)
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    model.save_pretrained(run / "adapter")
    tok.save_pretrained(run / "adapter")
    return run


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory):
    return _run_dir(tiny_model_dir, tmp_path_factory.mktemp("modelfile") / "run")


def test_modelfile_renders_the_training_prompt(capsys, run_dir, tmp_path):
    from transformers import AutoTokenizer

    from reasontune.config import from_dict
    from reasontune.export.llamacpp import parse_modelfile, render_go
    from reasontune.models.prompting import render_prompt

    assert cli.main(["export", str(run_dir), "--gguf", "--gguf-type", "f16", "--out", str(tmp_path / "g")]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    mf = parse_modelfile((tmp_path / "g" / "model-f16.Modelfile").read_text())
    assert res["modelfile"] == str(tmp_path / "g" / "model-f16.Modelfile")
    assert mf["FROM"] == "./model-f16.gguf" and (tmp_path / "g" / "model-f16.gguf").is_file()
    assert mf["SYSTEM"] == FORMAT["system_prompt"]
    assert mf["PARAMETER"] == ["stop <|im_end|>"]
    fmt = from_dict({"format": FORMAT}).format
    tok = AutoTokenizer.from_pretrained(run_dir / "adapter")
    for q in ("What is 12 + 30?", "A {{tricky}} question with \"quotes\"\nand a newline"):
        training = render_prompt(tok, [{"role": "system", "content": fmt.prompt}, {"role": "user", "content": q}], fmt)
        assert training.endswith("<think>") and FORMAT["system_prompt"] in training
        assert render_go(mf["TEMPLATE"], mf["SYSTEM"], q) == training
    assert "{{ .System }}" in mf["TEMPLATE"] and "{{ .Prompt }}" in mf["TEMPLATE"]
    card = (tmp_path / "g" / "README.md").read_text()
    assert "ollama create NAME -f model-f16.Modelfile" in card and "--jinja" in card
    assert "AMX" not in card and "AMX" not in (tmp_path / "g" / "model-f16.Modelfile").read_text()  # f16 only


def test_a_code_runs_exports_record_the_code_system_prompt_it_trained_with(capsys, tiny_model_dir, tmp_path):
    """A run on code rows (a reward that runs tests) was prompted with format.code_system_prompt: the GGUF's chat
    template, its Modelfile's SYSTEM, the merged folder's template, format file and card record that prompt,
    not format.system_prompt (the math rows' prompt)."""
    import gguf
    from transformers import AutoTokenizer
    from transformers.utils.chat_template_utils import render_jinja_template

    from reasontune.data import chat_messages
    from reasontune.export.llamacpp import parse_modelfile
    from reasontune.models.prompting import render_prompt

    code_prompt = "Write the Python function between <answer> and </answer>."
    run = _run_dir(tiny_model_dir, tmp_path / "run", format={**FORMAT, "code_system_prompt": code_prompt},
                   data={"dataset": "procedural:code"}, rewards={"names": ["code_tests", "format_strict"]})
    assert cli.main(["export", str(run), "--merged", "--gguf", "--gguf-type", "f16", "--out", str(tmp_path / "g")]) == 0
    capsys.readouterr()
    from reasontune.config import from_dict

    fmt = from_dict({"format": {**FORMAT, "code_system_prompt": code_prompt}}).format
    tok = AutoTokenizer.from_pretrained(run / "adapter")
    q = "Write a function double(x) that returns 2 * x."
    training = render_prompt(tok, chat_messages(q, fmt, code=True), fmt)  # what the run's code rows rendered
    assert code_prompt in training and FORMAT["system_prompt"] not in training
    mf = parse_modelfile((tmp_path / "g" / "model-f16.Modelfile").read_text())
    assert mf["SYSTEM"] == code_prompt
    template = gguf.GGUFReader(tmp_path / "g" / "model-f16.gguf").fields["tokenizer.chat_template"].contents()
    bare = [{"role": "user", "content": q}]
    (got,), _ = render_jinja_template([bare], chat_template=template, add_generation_prompt=True,
                                      **tok.special_tokens_map)
    assert got == training
    merged = AutoTokenizer.from_pretrained(tmp_path / "g")
    assert merged.apply_chat_template(bare, tokenize=False, add_generation_prompt=True) == training
    record = json.loads((tmp_path / "g" / "reasontune_adapter.json").read_text())
    assert record["system_prompt"] == code_prompt and record["format"]["system_prompt"] == FORMAT["system_prompt"]
    assert repr(code_prompt) in (tmp_path / "g" / "README.md").read_text()


def test_a_quantized_export_on_an_amx_host_warns_and_its_modelfile_and_card_say_why(run_dir, tmp_path, caplog,
                                                                                    monkeypatch):
    """Issue 36: on a CPU with AMX (a fake /proc/cpuinfo here), `export --gguf --gguf-type q8_0` logs a warning
    naming llama.cpp's bug and the workaround; the Modelfile (as a comment Ollama skips) and the card say it."""
    import logging

    from reasontune.export import amx
    from reasontune.export.llamacpp import parse_modelfile

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_vnni amx_bf16 amx_tile amx_int8\n")
    monkeypatch.setattr(amx, "CPUINFO", str(cpuinfo))
    with caplog.at_level(logging.WARNING, logger="reasontune.export.amx"):
        assert cli.main(["export", str(run_dir), "--gguf", "--gguf-type", "q8_0", "--out", str(tmp_path / "g")]) == 0
    warned = [r.getMessage() for r in caplog.records if r.name == "reasontune.export.amx"]
    assert len(warned) == 1 and "issue 20824" in warned[0] and amx.NO_AMX_FLAGS in warned[0], warned
    text = (tmp_path / "g" / "model-q8_0.Modelfile").read_text()
    assert text.startswith("# On CPUs with Intel AMX") and "issue 20824" in text.splitlines()[0]
    assert parse_modelfile(text)["FROM"] == "./model-q8_0.gguf"  # the comment changes nothing Ollama reads
    card = (tmp_path / "g" / "README.md").read_text()
    assert "**CPUs with Intel AMX**" in card and "--no-repack" in card and amx.NO_AMX_FLAGS in card
    caplog.clear()
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma bmi2\n")  # no AMX: no warning, same files
    with caplog.at_level(logging.WARNING, logger="reasontune.export.amx"):
        assert cli.main(["export", str(run_dir), "--gguf", "--gguf-type", "q8_0", "--out", str(tmp_path / "h")]) == 0
    assert not [r for r in caplog.records if r.name == "reasontune.export.amx"]


def test_render_go_refuses_what_it_cannot_render():
    from reasontune.export.llamacpp import render_go

    assert render_go('a{{ "{{" }}b {{ .System }}|{{ .Prompt }}', "S", "P") == "a{{b S|P"
    with pytest.raises(ValueError, match="unsupported action"):
        render_go("{{ if .System }}x{{ end }}", "S", "P")


def test_quantizing_without_llama_cpp_names_the_install_before_loading(capsys, run_dir, monkeypatch):
    from reasontune.stages import export

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp raises ImportError

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the flags were checked")

    monkeypatch.setattr(export, "load_merged", no_load)
    assert cli.main(["export", str(run_dir), "--merged", "--gguf", "--gguf-type", "q4_k_m"]) == 2
    err = capsys.readouterr().err
    assert "pip install llama-cpp-python==0.3.36" in err, err
    assert cli.main(["export", str(run_dir), "--merged", "--gguf-type", "q8_0"]) == 2
    assert "without --gguf" in capsys.readouterr().err


@pytest.mark.parametrize("specs, expected", [
    (["ffn_down=q6_k"], {"ffn_down": "q6_k"}),
    ([r"attn_(q|k)\.=Q8_0", "ffn_down=q6_k"], {r"attn_(q|k)\.": "q8_0", "ffn_down": "q6_k"}),
    (["blk\\.0\\..*=f16"], {"blk\\.0\\..*": "f16"}),
    ([], {}),
    (None, {}),
])
def test_tensor_type_specs_parse_as_llama_quantize_reads_them(specs, expected):
    from reasontune.export.llamacpp import parse_tensor_types

    got = parse_tensor_types(specs)
    assert got == expected and list(got) == list(expected)  # order kept: llama.cpp takes the first match


@pytest.mark.parametrize("spec, message", [
    ("ffn_down", "write PATTERN=TYPE"),
    ("=q6_k", "write PATTERN=TYPE"),
    ("ffn_down=q9_z", "not a ggml type"),
    ("ffn_(down=q6_k", "not a regex"),
])
def test_a_bad_tensor_type_spec_names_the_problem(spec, message):
    from reasontune.config import ConfigError
    from reasontune.export.llamacpp import parse_tensor_types

    with pytest.raises(ConfigError, match=message):
        parse_tensor_types([spec])


def test_tensor_types_are_refused_before_loading_where_llama_cpp_does_not_quantize(capsys, run_dir, monkeypatch):
    from reasontune.stages import export

    monkeypatch.setattr(export, "load_merged", lambda *a, **k: pytest.fail("the model loaded before the check"))
    assert cli.main(["export", str(run_dir), "--gguf", "--gguf-type", "f16", "--gguf-tensor-type", "ffn_down=q6_k"]) == 2
    assert "add --gguf-type with one of" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "llama_cpp", type(sys)("llama_cpp"))  # installed, as far as the check goes
    assert cli.main(["export", str(run_dir), "--gguf", "--gguf-type", "q4_k_m", "--gguf-tensor-type", "ffn_down"]) == 2
    assert "write PATTERN=TYPE" in capsys.readouterr().err


SMOL = {"token_embd.weight": 576, "blk.0.attn_q.weight": 576, "blk.0.ffn_down.weight": 1536,
        "blk.1.attn_q.weight": 576, "blk.1.ffn_down.weight": 1536}


@pytest.mark.parametrize("widths, kind, fallback, expected", [
    # SmolLM2's shapes: the 576-wide kinds take q8_0, one pattern per kind; ffn_down (1536) keeps the k-quant
    (SMOL, "q4_k_m", "q8_0", {r"^token_embd\.weight$": "q8_0", r"^blk\.\d+\.attn_q\.weight$": "q8_0"}),
    (SMOL, "q5_k_s", "q8_0", {r"^token_embd\.weight$": "q8_0", r"^blk\.\d+\.attn_q\.weight$": "q8_0"}),
    (SMOL, "q4_k_m", "llama.cpp", {}),  # llama.cpp's own mix
    (SMOL, "q4_0", "q8_0", {}),  # a legacy type takes any multiple of 32: nothing falls back
    ({"blk.0.attn_q.weight": 512, "blk.0.ffn_down.weight": 1536}, "q4_k_m", "q8_0", {}),  # every row fits
    # a kind narrow in one layer only: that tensor by name
    ({"blk.0.x.weight": 576, "blk.1.x.weight": 512}, "q4_k_m", "q8_0", {r"^blk\.0\.x\.weight$": "q8_0"}),
    ({"blk.0.x.weight": 100}, "q4_k_m", "q8_0", {}),  # not a multiple of 32: q8_0 cannot take it either
])
def test_fallback_overrides_type_the_tensors_the_k_quants_cannot_take(widths, kind, fallback, expected):
    import re

    from reasontune.export.llamacpp import fallback_overrides

    patterns = fallback_overrides(widths, kind, fallback)
    assert patterns == expected
    matched = {n for n in widths if any(re.search(p, n) for p in patterns)}  # llama.cpp searches each name
    assert matched == {n for n, w in widths.items() if expected and w % 256 and not w % 32}


ATTN_Q = r"^blk\.\d+\.attn_q\.weight$"  # the pattern fallback_overrides writes for SMOL's attn_q


@pytest.mark.parametrize("user, expected", [
    # a user pattern identical to ours keeps the user's type (it was silently replaced by q8_0)
    ({ATTN_Q: "f16"}, [(ATTN_Q, "f16"), (r"^token_embd\.weight$", "q8_0")]),
    # the user's patterns come first, in their order (llama.cpp takes the first that matches)
    ({"ffn_down": "q6_k", "attn": "q5_0"}, [("ffn_down", "q6_k"), ("attn", "q5_0"), (ATTN_Q, "q8_0"),
                                            (r"^token_embd\.weight$", "q8_0")]),
    ({ATTN_Q: "q8_0"}, [(ATTN_Q, "q8_0"), (r"^token_embd\.weight$", "q8_0")]),
])
def test_the_users_tensor_types_come_first_and_are_never_overridden(user, expected):
    from reasontune.export.llamacpp import fallback_overrides

    assert list(fallback_overrides(SMOL, "q4_k_m", "q8_0", user=user).items()) == expected
    assert fallback_overrides(SMOL, "q4_k_m", "llama.cpp", user=user) == user  # llama.cpp's mix: the user's only


def test_an_unknown_fallback_is_refused():
    from reasontune.config import ConfigError
    from reasontune.export.llamacpp import fallback_overrides

    with pytest.raises(ConfigError, match="use one of q8_0, llama.cpp"):
        fallback_overrides(SMOL, "q4_k_m", "q5_0")
