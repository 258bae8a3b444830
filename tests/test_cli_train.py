"""`reasontune train` on bad input: exit code 2, the message on stderr, no model loaded.

`train --dry-run` and a real `train` share `validate_run`, so both are checked on every fault.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_reliability_validate import FAULTS, fill, no_model_loads, fault_dir  # noqa: F401  (fixtures)

from reasontune.cli import main


def base_args(model_dir, tmp) -> list[str]:
    return ["train", "--model", str(model_dir), "--output-dir", str(tmp / "run"),
            "--set", "data.train_size=8", "--set", "data.test_size=2", "--batch-size", "4", "--num-generations", "2"]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "train"])
@pytest.mark.parametrize("name", sorted(FAULTS))
def test_cli_fault_exits_2_with_message(name, dry_run, tiny_model_dir, fault_dir, no_model_loads, capsys):
    # Later flags win: a fault's --output-dir replaces the base one.
    argv = base_args(tiny_model_dir, fault_dir) + fill(FAULTS[name][1], fault_dir) + (["--dry-run"] if dry_run else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "reasontune: error: " in err  # progress bars of a data read may come first
    for part in fill(FAULTS[name][2], fault_dir):
        assert part in err, (part, err)
    assert not (fault_dir / "run").exists()


def test_cli_dry_run_prints_config_and_loads_nothing(tiny_model_dir, fault_dir, no_model_loads, capsys):
    assert main(base_args(tiny_model_dir, fault_dir) + ["--dry-run", "--json"]) == 0
    cfg = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert cfg["model"]["name"] == str(tiny_model_dir) and cfg["grpo"]["num_generations"] == 2
    assert not (fault_dir / "run").exists()


def test_cli_bad_flag_type_is_an_argparse_error(tiny_model_dir, fault_dir, no_model_loads, capsys):
    with pytest.raises(SystemExit) as e:
        main(base_args(tiny_model_dir, fault_dir) + ["--learning-rate", "fast"])
    assert e.value.code == 2
    assert "--learning-rate: invalid float value: 'fast'" in capsys.readouterr().err


def test_cli_subprocess_exit_code_and_stderr(tiny_model_dir, fault_dir):
    """The real entry point, in a fresh interpreter: exit status 2, message on stderr, nothing on stdout."""
    argv = base_args(tiny_model_dir, fault_dir) + ["--reward", "no_such_reward"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "reasontune.cli", *argv], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "reasontune: error: rewards.names=['no_such_reward']: unknown reward" in proc.stderr
    assert "valid names are" in proc.stderr
    assert proc.stdout == ""
