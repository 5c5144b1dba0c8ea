"""CLI start-up: the three command lines import no torch / RDKit / Flower until a command runs.

`partner-kit --help` once took 21.7 s on a loaded machine because the module imported torch, RDKit and Flower
before parsing arguments. Each check runs in a fresh interpreter (this test process has long imported them all).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CLIS = ("data_prep.cli", "partner_kit.cli", "consortium.cli")
HEAVY = ("torch", "rdkit", "flwr")

# Walks the command tree of one CLI, runs `--help` of the group and of every (sub)command through typer's
# CliRunner, and reports exit codes, the output of any failure and the heavy modules loaded at the end.
WALK_HELP = """
import json, sys
import typer
from typer.testing import CliRunner
import {module} as cli

def walk(command, path):
    yield path
    for name, sub in sorted(getattr(command, "commands", {{}}).items()):
        yield from walk(sub, [*path, name])

runner = CliRunner()
codes, failures = {{}}, {{}}
for path in walk(typer.main.get_command(cli.app), []):
    result = runner.invoke(cli.app, [*path, "--help"])
    codes[" ".join(path)] = result.exit_code
    if result.exit_code != 0:
        failures[" ".join(path)] = result.output[-2000:] + repr(result.exception)
print(json.dumps({{"codes": codes, "failures": failures,
                  "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


def _python(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", CLIS)
def test_importing_the_cli_loads_no_torch_rdkit_or_flower(module):
    code = f"import json, sys, {module}; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [], f"`import {module}` loads heavy modules before any command runs"


@pytest.mark.parametrize("module", CLIS)
def test_help_of_every_command_exits_0_without_heavy_imports(module):
    report = _python(WALK_HELP.format(module=module, heavy=HEAVY))
    assert report["failures"] == {}
    assert len(report["codes"]) >= 4, report["codes"]  # the group itself and its commands
    assert report["heavy"] == [], f"--help of some {module} command imported {report['heavy']}"
