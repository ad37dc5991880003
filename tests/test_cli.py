"""The command line's frame: the command table, every subcommand's help, import cost, shared options."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from core import cli
from core.cli import common

ROOT = Path(__file__).resolve().parents[1]
CLI_DIR = ROOT / "core" / "cli"


def _defines(path: Path) -> set[str]:
    """Return the top-level names a module defines (functions and assignments)."""
    tree = ast.parse(path.read_text())
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    names |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    return names


def test_command_table_lists_exactly_the_subcommand_modules():
    with_commands = {f"core.cli.{p.stem}" for p in CLI_DIR.glob("*.py") if {"HELP", "add_arguments", "run"} <= _defines(p)}
    assert set(cli.COMMANDS.values()) == with_commands
    assert len(set(cli.COMMANDS.values())) == len(cli.COMMANDS)
    for name, module in cli.COMMANDS.items():
        assert module == f"core.cli.{name.replace('-', '_')}"  # a module is named after its subcommand
        loaded = cli.command_module(name)
        assert isinstance(loaded.HELP, str) and loaded.HELP
        assert callable(loaded.add_arguments) and callable(loaded.run)


def test_no_registration_by_side_effect():
    # Old flat modules are gone and nothing registers commands at import time.
    assert not list((ROOT / "core").glob("cli_*.py")) and not (ROOT / "core" / "cli.py").exists()
    assert not hasattr(cli, "register")


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_subcommand_help_exits_0(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m core {name}")


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert f"    {name} " in out


def _imports_torch(args: list[str]) -> tuple[bool, subprocess.CompletedProcess]:
    """Run ``python -m core ARGS`` in a subprocess; return whether torch was imported, and the process."""
    code = (
        "import sys\nfrom core.cli import main\n"
        "try:\n    status = main(sys.argv[1:])\nexcept SystemExit as exc:\n    status = exc.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\nsys.exit(status)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    return "\nTORCH" in "\n" + proc.stderr, proc


def test_info_and_help_do_not_import_torch(tissue_slide):
    slide, _ = tissue_slide
    for args in (["info", str(slide)], ["--help"], ["info", "--help"], ["demo-data", "--help"]):
        torch_loaded, proc = _imports_torch(args)
        assert proc.returncode == 0, proc.stderr
        assert not torch_loaded, args


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path / "absent.svs")]) == common.EXIT_ERROR == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")


def _explain_params(argv: list[str]) -> dict:
    from core.cli.explain import method_params

    args = cli.build_parser().parse_args(["explain", "--model", "m.pt", "--image", "p.png", "--out", "m.npy", *argv])
    return method_params(args)


@pytest.mark.parametrize("method", ["smoothgrad", "lime"])
@pytest.mark.parametrize("flag", ["--n-samples", "--samples", "--num-samples"])
def test_explain_n_samples_reaches_n_samples(method, flag):
    from core.explain import method_defaults

    assert _explain_params(["--method", method, flag, "7"]) == {"n_samples": 7}
    assert "n_samples" in method_defaults(method)  # the parameter the flag sets exists for this method


def test_explain_flags_check_the_method():
    from core.errors import CommandError

    with pytest.raises(CommandError, match="--n-samples does not apply to gradcam"):
        _explain_params(["--method", "gradcam", "--n-samples", "7"])
    assert _explain_params(["--method", "lime", "--hide-color", "mean", "--param", "top_k=3"]) == {"hide_color": None, "top_k": 3}


def test_explain_help_shows_the_methods_defaults(capsys):
    from core.explain import METHODS, method_defaults

    with pytest.raises(SystemExit):
        cli.main(["explain", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"number of noisy copies (default {method_defaults('smoothgrad')['n_samples']})" in out
    assert f"random on/off samples (default {method_defaults('lime')['n_samples']})" in out
    assert " | ".join(METHODS) in out
    assert all(name in cli.command_module("explain").HELP for name in METHODS)


def test_train_help_shows_the_recipe_defaults(capsys):
    from core.training.config import TrainConfig

    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"maximum epochs (default {TrainConfig.epochs};" in out
    assert f"initial learning rate (default {common.number_text(TrainConfig.lr)})" in out
    assert f"patches per step and rank (default {TrainConfig.batch_size})" in out


def test_precision_names_are_the_device_modules():
    from core.device import PRECISIONS

    parser = argparse.ArgumentParser()
    action = common.add_precision(parser, choices=True)
    assert set(action.choices) == set(PRECISIONS)


def test_shared_options_are_declared_once():
    # A shared option's flag appears in core/cli/common.py only, not in a subcommand module.
    shared = ("--device", "--precision", "--threshold", "--db", "--mode", "--nms-radius-um", "--allow-missing", "--split",
              "--inner-fraction", "--tissue-threshold", "--workers", "--batch-size")
    for path in CLI_DIR.glob("*.py"):
        if path.name == "common.py":
            continue
        calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "add_argument"]
        flags = {a.value for c in calls for a in c.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
        # Look-alikes that mean something else: explain's batch of method samples, demo-data's processes.
        allowed = {"explain.py": {"--batch-size"}, "demo_data.py": {"--workers"}}.get(path.name, set())
        assert not (flags & set(shared)) - allowed, path.name
