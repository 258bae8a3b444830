"""List fields on the command line: `--set rewards.names=a,b` and `--set rewards.names=[a, b]` both give a list of
the field's element type, for every list field of the config (the table below must name them all)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest

from reasontune.config import SECTIONS, ConfigError, RunConfig, override, parse_set

# every list field: (comma-separated text, the list it must give). Valid values, so __post_init__ passes
# (rewards.weights: one per default reward, four).
LIST_FIELDS = {
    "lora.target_modules": ("q_proj,v_proj", ["q_proj", "v_proj"]),
    "data.difficulty": ("1,3", [1, 3]),
    "rewards.names": ("answer_check,format_strict", ["answer_check", "format_strict"]),
    "rewards.weights": ("1,0.5,2,0", [1.0, 0.5, 2.0, 0.0]),
    "grpo.stop_on": ("zero_variance,truncation", ["zero_variance", "truncation"]),
    "grpo.report_to": ("tensorboard,wandb", ["tensorboard", "wandb"]),
}


def list_fields() -> set[str]:
    """Every section field annotated as a list or tuple (sections.py's annotations are strings)."""
    return {f"{name}.{f.name}" for name, cls in SECTIONS.items() for f in fields(cls)
            if str(f.type).startswith(("list", "tuple"))}


def test_the_table_names_every_list_field():
    assert list_fields() == set(LIST_FIELDS)


def _set(*items: str) -> RunConfig:
    return override(RunConfig(), parse_set(list(items)))


def _get(cfg: RunConfig, key: str):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _flow(values: list) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


@pytest.mark.parametrize("key", sorted(LIST_FIELDS))
@pytest.mark.parametrize("form", ["comma", "comma_spaces", "flow"])
def test_a_list_field_on_set_is_a_list_of_its_element_type(key, form):
    text, want = LIST_FIELDS[key]
    value = {"comma": text, "comma_spaces": text.replace(",", ", "), "flow": _flow(want)}[form]
    got = _get(_set(f"{key}={value}"), key)
    assert got == want and [type(x) for x in got] == [type(x) for x in want]


def test_the_cli_set_flag_gives_lists():
    """The path a user takes: `reasontune train --set ...` through argparse and config_from_args."""
    from reasontune.cli import build_parser
    from reasontune.config.args import config_from_args

    args = build_parser().parse_args(["train", "--set", "rewards.names=answer_check,format_strict",
                                      "--set", "lora.target_modules=[q_proj, v_proj]", "--set", "data.difficulty=2,4"])
    cfg = config_from_args(args)
    assert cfg.rewards.names == ["answer_check", "format_strict"]
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.data.difficulty == [2, 4]


def test_one_value_is_a_list_of_one():
    cfg = _set("rewards.names=answer_check", "data.difficulty=3")
    assert cfg.rewards.names == ["answer_check"] and cfg.data.difficulty == [3]


@pytest.mark.parametrize("item,words", [
    ("data.difficulty=1,x", ["difficulty", "'x'", "is not an integer"]),
    ("data.difficulty=[1, 2.5]", ["difficulty", "2.5", "is not an integer"]),
    ("rewards.weights=1,heavy,1,1", ["weights", "'heavy'", "is not a number"]),
    ("lora.target_modules=[q_proj, 7]", ["target_modules", "element 7", "is not a string"]),
])
def test_a_bad_element_is_refused_naming_the_key(item, words):
    with pytest.raises(ConfigError) as e:
        _set(item)
    for w in words:
        assert w in str(e.value)


def test_a_recipe_list_is_coerced_too():
    """A YAML recipe goes through the same loader: quoted numbers become the element type."""
    from reasontune.config import from_dict

    cfg = from_dict({"data": {"difficulty": ["1", 2]}, "rewards": {"weights": [1, "0.5", 2, 0]}})
    assert cfg.data.difficulty == [1, 2] and cfg.rewards.weights == [1.0, 0.5, 2.0, 0.0]


def test_a_tuple_field_gives_a_tuple():
    """No section has a tuple field today; the loader reads `tuple[int, ...]` as it reads a list, as a tuple."""
    from reasontune.config.loader import _build

    @dataclass
    class Levels:
        levels: tuple[int, ...] = (1,)

    assert _build(Levels, {"levels": "2,3"}, "section 'test'").levels == (2, 3)
