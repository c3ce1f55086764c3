"""The README's two commands are what users run and what CI runs: keep them honest."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n# (run|test)[^\n]*\n(.+?)\n```", text, re.S)
    return {name: command.strip() for name, command in blocks}


def test_ci_runs_exactly_the_readme_test_command():
    commands = readme_commands()
    assert set(commands) == {"run", "test"}
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line and not line.startswith(("#", "set ", "cd ", "export "))]
    assert ci_lines == [commands["test"]]


def test_both_commands_install_the_vad_model_without_torch():
    for command in readme_commands().values():
        assert "pip install --no-deps silero-vad" in command
        assert "torch" not in command
