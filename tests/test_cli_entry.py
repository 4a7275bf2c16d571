"""`slimtext --help` / `--version` answer without importing torch, from a table that matches the
commands the Typer app really registers."""

from __future__ import annotations

import subprocess
import sys

import typer

from slimtext import __version__
from slimtext.entry import COMMANDS, help_text


def test_static_command_table_matches_the_typer_app():
    from slimtext.cli import app

    group = typer.main.get_command(app)
    real = {name: (group.commands[name].help or "").strip().splitlines()[0]
            for name in group.list_commands(None)}
    assert list(COMMANDS) == list(real)
    assert COMMANDS == real


def test_help_and_version_do_not_import_torch():
    code = ("import sys; from slimtext.entry import main; main(['--help']); main(['--version']); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == help_text() + f"slimtext {__version__}\n"
    assert all(name in out for name in COMMANDS)
