"""Options from the command line, the environment and a TOML file: precedence,
validation, and one clear line for every bad value."""

from __future__ import annotations

import pytest
from conftest import one_line_error

from ftkit.config import build_config, load_file
from ftkit.configure import make_config
from ftkit.errors import UsageError


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lr", "0"], "--lr: must be a learning rate in (0, 10], got 0.0"),
        (["--lr", "-1e-4"], "--lr: must be a learning rate in (0, 10], got -0.0001"),
        (["--lr", "nan"], "--lr: must be a finite number, got nan"),
        (["--lr", "1e6"], "--lr: must be a learning rate in (0, 10], got 1000000.0"),
        (["--epochs", "0"], "--epochs: must be at least 1, got 0"),
        (["--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
        (["--lr", "fast"], "'fast' is not a valid float"),
        (["--task", "detection"], "unknown task 'detection'"),
        (["-o", "lr_scale"], "-o/--set expects KEY=VALUE, got 'lr_scale'"),
    ],
)
def test_bad_values_exit_2_with_one_line(ftkit, args, message):
    line = one_line_error(ftkit("plan", *args))
    assert message in line


def test_precedence_cli_env_file(tmp_path, monkeypatch):
    cfg = tmp_path / "ftkit.toml"
    cfg.write_text(
        'lr = 2e-4\nepochs = 3\nbatch-size = 4\n[strategy]\nname = "gradual"\nevery = 2\n'
    )
    monkeypatch.setenv("FTKIT_EPOCHS", "5")
    config = make_config(
        str(cfg), ("every=1",), (), {"lr": 1e-5, "epochs": None, "batch_size": None}
    )
    assert (config.lr, config.batch_size, config.strategy) == (1e-5, 4, "gradual")
    assert config.strategy_options == {"every": "1"}


def test_environment_variables(ftkit):
    result = ftkit(
        "plan", "--json", env={"FTKIT_LR": "2e-4", "FTKIT_STRATEGY": "full", "FTKIT_EPOCHS": "2"}
    )
    assert result.returncode == 0, result.stderr
    assert '"lr": 0.0002' in result.stdout and '"strategy": "full"' in result.stdout


def test_config_syntax_error_names_the_line(ftkit, tmp_path):
    (tmp_path / "bad.toml").write_text("lr = 1e-4\nepochs = = 3\n")
    line = one_line_error(ftkit("plan", "--config", "bad.toml"))
    assert "config file 'bad.toml' is not valid TOML" in line and "line 2" in line


def test_config_unknown_key_suggests(tmp_path):
    (tmp_path / "c.toml").write_text("learning_rate = 1e-4\nepoch = 3\n")
    with pytest.raises(
        UsageError,
        match="unknown key 'epoch' \\(did you mean 'epochs'\\?\\)|unknown key 'learning_rate'",
    ):
        load_file(str(tmp_path / "c.toml"))


def test_config_wrong_type(tmp_path):
    with pytest.raises(UsageError, match="--epochs: expected int, got 'ten'"):
        build_config({"epochs": "ten"}, {}, {}, ())


def test_missing_config_file(ftkit):
    line = one_line_error(ftkit("plan", "--config", "nope.toml"))
    assert line == "ftkit: error: config file 'nope.toml' not found"


def test_resolved_config_round_trips(tmp_path):
    config = build_config({}, {"lr": 3e-5, "loss": "0.7*ce+0.3*dice"}, {"every": "2"}, ("m",))
    (tmp_path / "config.toml").write_text(config.to_toml())
    again = build_config(load_file(str(tmp_path / "config.toml")), {}, {}, ())
    assert again == config


def test_run_options_and_strategy_options_read_values_alike():
    # One Option.parse for both: the same words for booleans, the same checks.
    from ftkit.plan.options import Option

    assert build_config({"guard": "no"}, {}, {}, ()).guard is False
    assert build_config({"channels_last": "on"}, {}, {}, ()).channels_last is True
    assert Option("x", bool, False, "").parse("on", "test") is True
    with pytest.raises(UsageError, match="--guard: expected bool, got 'maybe'"):
        build_config({"guard": "maybe"}, {}, {}, ())
