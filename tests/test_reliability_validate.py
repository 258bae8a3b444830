"""Issue 9: bad input fails before any model loads, naming the field, the value and the fix.

Each fault is checked through the Python API (`validate_run` and `train`); tests/test_cli_train.py
runs the same table through `reasontune train` and `train --dry-run`. A loader that raises proves
that nothing heavy was loaded before the error.
"""

from __future__ import annotations

import json

import pytest

from reasontune.config import ConfigError, from_dict, load_yaml

# name -> (config dict for the API, extra CLI args, substrings the message must hold)
# The dicts and args are templates: {tmp} is the test's temp folder.
FAULTS = {
    "batch_not_divisible": (
        {"grpo": {"per_device_train_batch_size": 3, "num_generations": 2}},
        ["--batch-size", "3", "--num-generations", "2"],
        ["grpo.per_device_train_batch_size=3", "must be divisible by num_generations=2"]),
    "grad_accum_not_divisible": (
        {"grpo": {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 3, "num_generations": 4}},
        ["--batch-size", "2", "--set", "grpo.gradient_accumulation_steps=3", "--num-generations", "4"],
        ["grad-accum 3", "= 6 must be divisible by num_generations=4"]),
    "num_generations_below_2": (
        {"grpo": {"num_generations": 1}}, ["--num-generations", "1"],
        ["grpo.num_generations=1", "use 2 or more"]),
    "unknown_reward": (
        {"rewards": {"names": ["no_such_reward"]}}, ["--reward", "no_such_reward"],
        ["rewards.names=['no_such_reward']", "valid names are", "answer_check", "format_exact"]),
    "missing_dataset_file": (
        {"data": {"dataset": "{tmp}/missing.jsonl"}}, ["--dataset", "{tmp}/missing.jsonl"],
        ["missing.jsonl", "not found", "give an existing .jsonl"]),
    "missing_columns": (
        {"data": {"dataset": "{tmp}/cols.jsonl"}}, ["--dataset", "{tmp}/cols.jsonl"],
        ["no question column among ['bar', 'foo']", "--question-column"]),
    "named_column_missing": (
        {"data": {"dataset": "{tmp}/cols.jsonl", "question_column": "question"}},
        ["--dataset", "{tmp}/cols.jsonl", "--question-column", "question"],
        ["'question' is not a column", "the columns are"]),
    "code_rewards_without_tests": (
        {"rewards": {"names": ["format_exact", "code_tests"]}}, ["--reward", "format_exact", "--reward", "code_tests"],
        ["rewards ['code_tests'] run each row's tests", "'procedural:arithmetic' has no code rows",
         "--dataset humaneval, mbpp, procedural:code", "drop them from rewards.names"]),
    "learning_rate_zero": (
        {"grpo": {"learning_rate": 0.0}}, ["--learning-rate", "0"],
        ["grpo.learning_rate=0.0", "use a learning rate > 0"]),
    "learning_rate_negative": (
        {"grpo": {"learning_rate": -1e-5}}, ["--set", "grpo.learning_rate=-1e-5"],
        ["grpo.learning_rate=-1e-05", "use a learning rate > 0"]),
    "learning_rate_not_a_number": (
        {"grpo": {"learning_rate": "fast"}}, ["--set", "grpo.learning_rate=fast"],
        ["learning_rate='fast'", "is not a number", "use a number such as 5e-6"]),
    "marker_empty": (
        {"format": {"solution_start": " "}}, ["--set", "format.solution_start=' '"],
        ["format.solution_start=' '", "non-empty"]),
    "markers_equal": (
        {"format": {"solution_start": "<A>", "solution_end": "<A>"}},
        ["--set", "format.solution_start=<A>", "--set", "format.solution_end=<A>"],
        ["format markers", "'<A>', '<A>'", "must all differ"]),
    "output_holds_a_run": (
        {"output_dir": "{tmp}/oldrun"}, ["--output-dir", "{tmp}/oldrun"],
        ["output_dir=", "oldrun", "already holds a run", "--resume", "--overwrite"]),
    "output_under_a_file": (
        {"output_dir": "{tmp}/afile/run"}, ["--output-dir", "{tmp}/afile/run"],
        ["output_dir=", "afile/run", "cannot be written", "choose a writable --output-dir"]),
    "resume_and_overwrite": (
        {"output_dir": "{tmp}/oldrun", "resume": True, "overwrite": True},
        ["--output-dir", "{tmp}/oldrun", "--resume", "--overwrite"], ["not both"]),
    "resume_without_run": (
        {"output_dir": "{tmp}/empty", "resume": True}, ["--output-dir", "{tmp}/empty", "--resume"],
        ["holds no run to resume", "drop --resume"]),
    "yaml_unknown_key": (
        "{tmp}/bad.yaml", ["--config", "{tmp}/bad.yaml"],
        ["unknown key(s) ['learnig_rate']", "section 'grpo'", "valid keys are", "learning_rate"]),
    "yaml_lr_string": (
        "{tmp}/lr.yaml", ["--config", "{tmp}/lr.yaml"],
        ["learning_rate='five'", "is not a number"]),
}


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any model load fails the test: proves a check ran before anything heavy."""
    import transformers

    from reasontune import models

    def boom(*a, **k):
        raise AssertionError("a model was loaded before validation failed")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    monkeypatch.setattr(models, "load_model_and_tokenizer", boom)


@pytest.fixture
def fault_dir(tmp_path):
    """Files the faults point at: a dataset without usable columns, an old run, a file, bad YAML."""
    (tmp_path / "cols.jsonl").write_text(json.dumps({"foo": "1+1", "bar": "2"}) + "\n")
    (tmp_path / "oldrun").mkdir()
    (tmp_path / "oldrun" / "status.json").write_text('{"status": "done"}')
    (tmp_path / "oldrun" / "reasontune_config.json").write_text("{}")
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "bad.yaml").write_text("grpo:\n  learnig_rate: 1e-5\n")
    (tmp_path / "lr.yaml").write_text("grpo:\n  learning_rate: five\n")
    return tmp_path


def fill(obj, tmp):
    """Replace {tmp} in a (nested) template."""
    if isinstance(obj, str):
        return obj.replace("{tmp}", str(tmp))
    if isinstance(obj, list):
        return [fill(v, tmp) for v in obj]
    if isinstance(obj, dict):
        return {k: fill(v, tmp) for k, v in obj.items()}
    return obj


def base_dict(model_dir, tmp) -> dict:
    return {"model": {"name": str(model_dir)}, "output_dir": str(tmp / "run"),
            "data": {"train_size": 8, "test_size": 2},
            "grpo": {"per_device_train_batch_size": 4, "num_generations": 2}}


def merged(base: dict, fault: dict) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in fault.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) else v
    return out


def api_config(name, model_dir, tmp):
    """The RunConfig for a fault, built through the Python API (raises for config-time faults)."""
    spec = fill(FAULTS[name][0], tmp)
    if isinstance(spec, str):  # a YAML file
        return load_yaml(spec)
    return from_dict(merged(base_dict(model_dir, tmp), spec))


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_validate_run_names_field_value_and_fix(name, tiny_model_dir, fault_dir, no_model_loads):
    from reasontune.runs.validate import validate_run

    with pytest.raises(ConfigError) as err:
        validate_run(api_config(name, tiny_model_dir, fault_dir))
    for part in fill(FAULTS[name][2], fault_dir):
        assert part in str(err.value), (part, str(err.value))


@pytest.mark.parametrize("name", ["batch_not_divisible", "unknown_reward", "missing_columns",
                                  "output_holds_a_run", "output_under_a_file"])
def test_train_api_fails_before_loading(name, tiny_model_dir, fault_dir, no_model_loads):
    """train() runs the same checks first: no model load, no run folder written."""
    from reasontune.stages.train import train

    cfg = api_config(name, tiny_model_dir, fault_dir)
    with pytest.raises(ConfigError):
        train(cfg)
    assert not (fault_dir / "run").exists()
    if name == "output_holds_a_run":  # the old run is untouched
        assert json.loads((fault_dir / "oldrun" / "status.json").read_text()) == {"status": "done"}


def test_valid_config_passes(tiny_model_dir, fault_dir, no_model_loads):
    from reasontune.runs.validate import validate_run

    validate_run(from_dict(base_dict(tiny_model_dir, fault_dir)))
    assert not (fault_dir / "run").exists()  # validation writes nothing


def test_resume_and_overwrite_of_an_existing_run_pass(tiny_model_dir, fault_dir, no_model_loads):
    from reasontune.runs.validate import validate_run

    for flag in ("resume", "overwrite"):
        validate_run(from_dict({**base_dict(tiny_model_dir, fault_dir), "output_dir": str(fault_dir / "oldrun"),
                                flag: True}))


@pytest.mark.parametrize("section,key,value,expected", [
    ("grpo", "max_steps", "ten", "max_steps='ten' is not an integer"),
    ("grpo", "max_steps", True, "max_steps=True is not an integer"),
    ("lora", "gradient_checkpointing", "yes", "gradient_checkpointing='yes' is not true or false"),
    ("grpo", "max_nonfinite_steps", 0, "grpo.max_nonfinite_steps=0"),
])
def test_config_type_errors_name_the_field(section, key, value, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        from_dict({section: {key: value}})


def test_yaml_friendly_coercions():
    cfg = from_dict({"grpo": {"learning_rate": "5e-6", "max_steps": "10", "bf16": False, "warmup_ratio": 0}})
    assert (cfg.grpo.learning_rate, cfg.grpo.max_steps, cfg.grpo.bf16) == (5e-6, 10, "false")
    assert isinstance(cfg.grpo.warmup_ratio, float)
