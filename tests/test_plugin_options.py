"""Plugins' own command-line options (``ftkit_add_options``, pytest's
``pytest_addoption`` for ftkit): shown by --help, read from the command line,
the environment and config files, recorded in config.toml, restored on
--resume, handed to ``Task.load_data``; and every mistake one line, exit 2.

Most tests call ``ftkit.cli.main`` in this process (click's ``CliRunner``), as
many times as they like: each parse finds its plugins afresh."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftkit.errors import UsageError

OPTIONS = """
import json

import ftkit
from ftkit.tasks import classification_metrics


def _wide(v):
    return None if v >= 1 else "must be at least 1"


@ftkit.hookimpl
def ftkit_add_options(register):
    register(ftkit.Option("colour", str, "red", "the test's colour",
                          choices=("red", "green", "blue")))
    register(ftkit.Option("width", int, 3, "how wide the test is", check=_wide))
    register(ftkit.Option("shout", bool, False, "whether the test shouts"))


def seen(where, options):
    with open("seen.jsonl", "a") as fh:
        fh.write(json.dumps({"where": where, **options}) + "\\n")


def load(spec, *, model, seed, num_classes, options):
    from ftkit.data.builtin import shapes

    seen("load_data", options)
    return shapes(task="classification", image_size=32, num_samples=16, seed=seed)


def load_as_before(spec, *, model, seed, num_classes):
    from ftkit.data.builtin import shapes

    return shapes(task="classification", image_size=32, num_samples=16, seed=seed)


@ftkit.hookimpl
def ftkit_register_tasks(register):
    for name, loader in (("coloured", load), ("plain", load_as_before)):
        register(ftkit.Task(name, "classification", "val_accuracy",
                            ("val_accuracy", "val_loss"), classification_metrics,
                            "f1_per_class", load_data=loader))


@ftkit.hookimpl
def ftkit_run_start(run):
    seen("run_start", run.config.plugin_options)
"""
TINY = ["--task", "coloured", "--model", "tv:resnet18", "--image-size", "32"]
TINY += ["--batch-size", "4", "--epochs", "1", "--strategy", "full", "--device", "cpu"]
DEFAULTS = {"colour": "red", "width": 3, "shout": False}
_names = itertools.count()


class _Main:
    """``ftkit.cli.main`` as ``CliRunner`` invokes a command: exit codes and
    stderr exactly as a user gets them."""

    def main(self, args, prog_name=None, **extra):
        from ftkit.cli import main

        main(list(args))


def ftkit_here(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(_Main(), list(args), env=env, prog_name="ftkit")


def one_line(result) -> str:
    """The contract for bad input: exit 2, one line on stderr, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def words(text: str) -> str:
    return " ".join(text.split())


def seen(where: Path) -> list[dict]:
    return [json.loads(line) for line in (where / "seen.jsonl").read_text().splitlines()]


def write_plugin(folder: Path, body: str, stem: str) -> str:
    name = f"{stem}_{next(_names)}"  # a fresh module: sys.modules keeps the others
    (folder / f"{name}.py").write_text(textwrap.dedent(body))
    return name


@pytest.fixture
def here(tmp_path, monkeypatch):
    """``tmp_path`` as the working directory, its modules importable; they are
    forgotten afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith(("opts_", "clash_")):
            del sys.modules[name]


@pytest.fixture
def plugin(here):
    return write_plugin(here, OPTIONS, "opts")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A finished run given --colour blue --width 5 --shout, through --plugin."""
    where = tmp_path_factory.mktemp("recorded")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(where)
        mp.syspath_prepend(str(where))
        name = write_plugin(where, OPTIONS, "opts")
        args = ["--colour", "blue", "--width", "5", "--shout"]
        result = ftkit_here("run", "--plugin", name, *TINY, *args, "--out", "run")
        assert result.exit_code == 0, (result.output, result.exception)
        yield where, name
        sys.modules.pop(name, None)


# --- ftkit_add_options: --help ------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "plan", "lr-find"])
def test_help_lists_the_options_with_help_and_default(plugin, command):
    result = ftkit_here(command, "--plugin", plugin, "--help")
    assert result.exit_code == 0, result.output
    text = words(result.output)
    assert f"--colour [red|green|blue] the test's colour (plugin {plugin}) [default: red]" in text
    assert f"--width INT how wide the test is (plugin {plugin}) [default: 3]" in text
    assert f"--shout / --no-shout whether the test shouts (plugin {plugin}) [default: False]" in (
        text
    )
    assert text.index("--out STR") < text.index("--colour") < text.index("-h, --help")


def test_help_is_parsed_afresh_each_time(plugin):
    """One process, many ``main``: options come with the plugin and go with it."""
    assert "--width INT" in ftkit_here("plan", "--plugin", plugin, "--help").output
    assert "--width" not in ftkit_here("plan", "--help").output
    by_env = ftkit_here("plan", "--help", env={"FTKIT_PLUGINS": plugin})
    assert "--width INT" in by_env.output
    assert by_env.output.count("--width") == 1
    assert "--width" not in ftkit_here("run", "--help").output


def test_help_with_plugin_options_imports_no_torch(plugin, here):
    code = (
        "import sys\nfrom ftkit.cli import main\n"
        "try:\n    main(['run', '--help'])\nexcept SystemExit as exc:\n    assert not exc.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=here,
        env={**os.environ, "FTKIT_PLUGINS": plugin},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "--width INT" in result.stdout


# --- where the values come from -----------------------------------------------------


def test_command_line_values_reach_load_data(plugin, here):
    result = ftkit_here("plan", "--plugin", plugin, *TINY, "--width", "5", "--no-shout")
    assert result.exit_code == 0, (result.output, result.exception)
    assert seen(here) == [{"where": "load_data", "colour": "red", "width": 5, "shout": False}]


def test_environment_variables_are_read(plugin, here):
    env = {"FTKIT_PLUGINS": plugin, "FTKIT_WIDTH": "7", "FTKIT_SHOUT": "1"}
    result = ftkit_here("plan", *TINY, env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    assert seen(here)[-1] == {"where": "load_data", "colour": "red", "width": 7, "shout": True}


def test_a_config_file_names_the_plugin_and_sets_its_options(plugin, here):
    (here / "c.toml").write_text(f'plugins = ["{plugin}"]\ncolour = "green"\nwidth = 4\n')
    for extra, env, width in (
        ([], None, 4),
        ([], {"FTKIT_WIDTH": "6"}, 6),
        (["--width", "8"], None, 8),
    ):
        result = ftkit_here("plan", "--config", "c.toml", *TINY, *extra, env=env)
        assert result.exit_code == 0, (result.output, result.exception)
        # command line over environment over the file
        assert seen(here)[-1] == {"where": "load_data", "colour": "green", "width": width,
                                  "shout": False}  # fmt: skip


def test_a_load_data_without_options_is_called_as_before(plugin):
    result = ftkit_here("plan", "--plugin", plugin, *TINY[2:], "--task", "plain", "--width", "2")
    assert result.exit_code == 0, (result.output, result.exception)


def test_make_config_takes_them_by_name(plugin):
    from ftkit.configure import make_config
    from ftkit.plugins.manager import Plugins
    from ftkit.prepare import with_plugin_options

    config = make_config(None, (), (plugin,), {"width": "5", "colour": None})
    assert config.plugin_options == {**DEFAULTS, "width": 5}
    assert make_config(None, (), (plugin,), {}).plugin_options == DEFAULTS
    with pytest.raises(UsageError, match=r"^unknown option 'widht' \(did you mean 'width'\?\)$"):
        make_config(None, (), (plugin,), {"widht": 5})
    with pytest.raises(UsageError, match=r"^--width: must be at least 1, got '0'$"):
        make_config(None, (), (plugin,), {"width": "0"})
    # a Config made in Python gets the defaults when prepared (so a run records them)
    plugins = Plugins((plugin,))
    assert with_plugin_options(config, plugins) is config
    bare = make_config(None, (), (), {})
    assert bare.plugin_options == {}
    assert with_plugin_options(bare, plugins).plugin_options == DEFAULTS


# --- recorded, restored -------------------------------------------------------------


def test_config_toml_records_them_and_the_plugin_saw_them(recorded):
    where, _ = recorded
    saved = tomllib.loads((where / "run" / "config.toml").read_text())
    assert (saved["colour"], saved["width"], saved["shout"]) == ("blue", 5, True)
    given = {"colour": "blue", "width": 5, "shout": True}
    assert seen(where)[:2] == [{"where": "load_data", **given}, {"where": "run_start", **given}]


def test_resume_restores_them(recorded, tmp_path, monkeypatch):
    where, _ = recorded
    run = tmp_path / "run"
    shutil.copytree(where / "run", run)
    (run / "summary.json").unlink()  # stopped after its last checkpoint
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(where))
    # no --plugin, no options: the run's config.toml names the plugin and holds them
    result = ftkit_here("run", "--resume", "run")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "resuming run after epoch 1" in result.output
    assert seen(tmp_path) == [
        {"where": "load_data", "colour": "blue", "width": 5, "shout": True},
        {"where": "run_start", "colour": "blue", "width": 5, "shout": True},
    ]
    assert (run / "config.toml").read_text() == (where / "run" / "config.toml").read_text()


def test_resume_refuses_a_changed_option(recorded, tmp_path, monkeypatch):
    where, _ = recorded
    shutil.copytree(where / "run", tmp_path / "run")
    (tmp_path / "run" / "summary.json").unlink()
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(where))
    line = one_line(ftkit_here("run", "--resume", "run", "--width", "4", "--colour", "red"))
    assert line == (
        "ftkit: error: --resume 'run': these options would change the training: "
        "colour: 'blue' -> 'red'; width: 5 -> 4"
    )


def test_eval_reads_them_back(recorded, tmp_path, monkeypatch):
    where, _ = recorded
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(where))
    result = ftkit_here("eval", "--checkpoint", str(where / "run"), "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    assert seen(tmp_path) == [{"where": "load_data", "colour": "blue", "width": 5, "shout": True}]


def test_lr_find_passes_them_on_to_its_run_command(plugin):
    args = ["lr-find", "--plugin", plugin, *TINY, "--width", "5", "--steps", "10", "--json"]
    result = ftkit_here(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "--width 5" in json.loads(result.stdout)["command"]


# --- mistakes: one line, exit 2 -----------------------------------------------------


def test_a_misspelled_option_on_the_command_line(plugin):
    line = one_line(ftkit_here("plan", "--plugin", plugin, "--widht", "5"))
    assert line.startswith("ftkit: error: No such option '--widht'.")
    assert "'--width'" in line


def test_a_misspelled_option_in_a_config_file(plugin, here):
    (here / "c.toml").write_text(f'plugins = ["{plugin}"]\nwidht = 4\n')
    line = one_line(ftkit_here("plan", "--config", "c.toml"))
    assert line == "ftkit: error: config file 'c.toml': unknown key 'widht' (did you mean 'width'?)"
    # without the plugin, its options are no keys either
    (here / "c.toml").write_text("width = 4\n")
    line = one_line(ftkit_here("plan", "--config", "c.toml"))
    assert line.startswith("ftkit: error: config file 'c.toml': unknown key 'width'")


@pytest.mark.parametrize(
    ("args", "env", "toml", "message"),
    [
        (["--width", "0"], None, "", "--width: must be at least 1, got 0"),
        (["--colour", "pink"], None, "", "Invalid value for '--colour': 'pink' is not one of"),
        ([], {"FTKIT_WIDTH": "wide"}, "", "invalid value in the environment variable FTKIT_WIDTH"),
        ([], None, 'width = "wide"', "--width: expected int, got 'wide'"),
        ([], None, 'colour = "pink"', "--colour: must be one of red, green, blue, got 'pink'"),
        ([], None, 'plugins = "x"', "plugins must be a list of module names, got 'x'"),
    ],
)
def test_bad_values_are_one_line(plugin, here, args, env, toml, message):
    (here / "c.toml").write_text(toml if "plugins" in toml else f'plugins = ["{plugin}"]\n{toml}\n')
    line = one_line(ftkit_here("plan", "--config", "c.toml", *args, env=env))
    assert message in line


CLASH = """
import ftkit


@ftkit.hookimpl
def ftkit_add_options(register):
    register({option})
"""


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            'ftkit.Option("lr", float, 1.0, "x")',
            "adds option 'lr' (--lr), which is ftkit's own option --lr",
        ),
        (
            'ftkit.Option("rate", float, 1.0, "x", flag="--epochs")',
            "adds option 'rate' (--epochs), which is ftkit's own option --epochs",
        ),
        (
            'ftkit.Option("no_guard", bool, False, "x")',
            "adds option 'no_guard' (--no-guard), which is ftkit's own option --guard",
        ),
        (
            'ftkit.Option("config", str, None, "x", flag="--cfg")',
            "adds option 'config' (--cfg), which is ftkit's own option --config",
        ),
        ('ftkit.Option("resume", str, None, "x")', "(--resume), which 'ftkit run' has already"),
        ('ftkit.Option("steps", int, 1, "x")', "(--steps), which 'ftkit lr-find' has already"),
        ('ftkit.Option("json", bool, False, "x")', "(--json), which 'ftkit plan' has already"),
        ('ftkit.Option("Width", int, 1, "x")', "adds option 'Width': a name is lowercase words"),
        ('ftkit.Option("w", list, 1, "x")', "its type must be str, int, float or bool, got list"),
        (
            'ftkit.Option("w", int, 0, "x", check=lambda v: None if v else "must not be 0")',
            "adds option 'w' with a default it refuses: --w: must not be 0, got 0",
        ),
        ('"width"', "registered a str in ftkit_add_options; expected an ftkit.Option"),
    ],
)
def test_a_clash_or_a_bad_option_is_a_plugin_error(here, option, message):
    name = write_plugin(here, CLASH.format(option=option), "clash")
    line = one_line(ftkit_here("plan", "--plugin", name))
    assert line.startswith(f"ftkit: error: plugin '{name}' ")
    assert message in line


def test_two_plugins_with_one_option(plugin, here):
    same = write_plugin(here, CLASH.format(option='ftkit.Option("width", int, 1, "x")'), "clash")
    line = one_line(ftkit_here("run", "--plugin", plugin, "--plugin", same))
    assert line == (
        f"ftkit: error: plugin option 'width' is registered twice: by plugin '{plugin}' "
        f"and by plugin '{same}'"
    )
    flag = 'ftkit.Option("breadth", int, 1, "x", flag="--width")'
    other = write_plugin(here, CLASH.format(option=flag), "clash")
    line = one_line(ftkit_here("plan", "--plugin", plugin, "--plugin", other))
    assert line == (
        f"ftkit: error: plugin option flag --width is added twice: by plugin '{plugin}' "
        f"and by plugin '{other}'"
    )
