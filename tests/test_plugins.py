"""The plugin system: entry points, local modules, and loud, precise errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import one_line_error

STRATEGY_PLUGIN = """
import ftkit
from ftkit.plan.strategy import group, single_stage

@ftkit.hookimpl
def ftkit_register_strategies(register):
    register(ftkit.Strategy("{name}", "a test strategy", lambda a, r: single_stage(
        "s", r.epochs, group("head", a.params_of(a.head), r.lr))))
"""


def make_distribution(site, module, body, dist="ftkit-demo", version="0.3.1"):
    """A minimal installed distribution with an ``ftkit`` entry point."""
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(body))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[ftkit]\n{module} = {module}\n")
    return {"PYTHONPATH": str(site), "FTKIT_DISABLE_PLUGIN_AUTOLOAD": ""}


def test_entry_point_plugin_is_discovered(ftkit, tmp_path):
    env = make_distribution(tmp_path / "site", "demo_plugin", STRATEGY_PLUGIN.format(name="demo"))
    plugins = json.loads(ftkit("plugins", "--json", env=env).stdout)
    demo = next(p for p in plugins if p["name"] == "demo_plugin")
    assert (demo["distribution"], demo["version"]) == ("ftkit-demo", "0.3.1")
    assert demo["hooks"] == ["ftkit_register_strategies"]
    strategies = json.loads(ftkit("strategies", "--json", env=env).stdout)
    row = next(s for s in strategies if s["name"] == "demo")
    assert (row["plugin"], row["distribution"]) == ("demo_plugin", "ftkit-demo")

    env["FTKIT_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    assert "demo_plugin" not in ftkit("plugins", "--json", env=env).stdout
    assert '"demo"' not in ftkit("strategies", "--json", env=env).stdout


def test_builtins_come_through_the_same_hooks(ftkit):
    plugins = {p["name"]: p for p in json.loads(ftkit("plugins", "--json").stdout)}
    assert plugins["ftkit.strategies.two_stage"]["hooks"] == ["ftkit_register_strategies"]
    assert plugins["ftkit.strategies.two_stage"]["distribution"] == "ftkit"
    strategies = {s["name"]: s for s in json.loads(ftkit("strategies", "--json").stdout)}
    assert set(strategies) >= {
        "full",
        "freeze",
        "discriminative",
        "llrd",
        "two-stage",
        "gradual",
        "loss-switch",
    }
    options = {o["name"]: o for o in strategies["two-stage"]["options"]}
    assert options["backbone_div"] == {
        "name": "backbone_div",
        "type": "float",
        "default": 20.0,
        "help": "stage 2 backbone LR = lr * lr_scale / backbone_div",
    }
    assert strategies["two-stage"]["plugin"] == "ftkit.strategies.two_stage"


def test_plugin_that_fails_to_import(ftkit, tmp_path):
    env = make_distribution(
        tmp_path / "site",
        "broken",
        "raise RuntimeError('no GPU here')",
        dist="ftkit-broken",
        version="1.2",
    )
    line = one_line_error(ftkit("strategies", env=env))
    assert "'broken' (ftkit-broken 1.2) failed to import: RuntimeError: no GPU here" in line


def test_plugin_with_a_wrong_hook_signature(ftkit, tmp_path):
    body = """
    import ftkit

    @ftkit.hookimpl
    def ftkit_register_strategies(register, colour):
        pass
    """
    env = make_distribution(tmp_path / "site", "wrongsig", body, dist="ftkit-wrongsig")
    line = one_line_error(ftkit("plugins", env=env))
    assert "plugin 'wrongsig' (ftkit-wrongsig 0.3.1) is invalid" in line
    assert "colour" in line


def test_two_plugins_registering_one_name(ftkit, tmp_path):
    env = make_distribution(
        tmp_path / "site", "clash", STRATEGY_PLUGIN.format(name="freeze"), dist="ftkit-clash"
    )
    line = one_line_error(ftkit("strategies", env=env))
    assert (
        "strategy 'freeze' is registered twice: by plugin 'ftkit.strategies.freeze' "
        "and by plugin 'clash'"
    ) in line


def test_local_plugin_modules(ftkit, tmp_path):
    (tmp_path / "mine.py").write_text(STRATEGY_PLUGIN.format(name="mine"))
    (tmp_path / "yours.py").write_text(STRATEGY_PLUGIN.format(name="yours"))
    by_option = json.loads(ftkit("strategies", "--json", "--plugin", "mine").stdout)
    assert {"mine"} <= {s["name"] for s in by_option}
    by_env = json.loads(ftkit("strategies", "--json", env={"FTKIT_PLUGINS": "mine,yours"}).stdout)
    assert {"mine", "yours"} <= {s["name"] for s in by_env}
    assert next(s for s in by_env if s["name"] == "mine")["distribution"] is None


def test_missing_plugin_module(ftkit):
    line = one_line_error(ftkit("strategies", "--plugin", "no_such_module_here"))
    assert line == "ftkit: error: plugin module 'no_such_module_here' not found"


def test_unknown_strategy_suggests_the_closest(ftkit):
    line = one_line_error(ftkit("plan", "--strategy", "two-stag"))
    assert "unknown strategy 'two-stag' (did you mean 'two-stage'?)" in line
    assert "known: discriminative, freeze, full, gradual, llrd, loss-switch, two-stage" in line


@pytest.mark.parametrize("args", [["--help"], ["strategies"], ["plugins"], ["--version"]])
def test_fast_commands_do_not_import_torch(args):
    code = (
        f"import sys\nfrom ftkit.cli import main\nmain({args!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_version(ftkit):
    assert ftkit("--version").stdout.strip() == "ftkit, version 0.1.0"
