"""CLI start-up: wall time of `<cli> [command] --help` for every command of the three command lines.

Each call is a fresh process started through the installed entry point, as a user types it, so the time is
interpreter start-up + the CLI module's imports + argument parsing. Prints a Markdown table (median and max of
`--repeat` calls) with the machine and its load before and after, for BENCHMARKS.md.

    .venv/bin/python benchmarks/bench_cli_startup.py [--repeat 5] [--bin .venv/bin]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_info import cpu_name, load_average  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

CLIS = {"data-prep": "data_prep.cli", "partner-kit": "partner_kit.cli", "consortium": "consortium.cli"}


def commands(python: Path, module: str) -> list[str]:
    """The CLI's command names, read from its typer app in a separate process (not timed)."""
    code = f"import typer, {module} as m; print(' '.join(typer.main.get_command(m.app).commands))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.split()


def time_help(argv: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="calls per command (median and max reported)")
    parser.add_argument("--bin", type=Path, default=Path(sys.executable).parent, help="the venv's bin directory")
    args = parser.parse_args()
    print(f"{cpu_name()}, load (1/5/15 min) before: {load_average()}")
    print("| command | median s | max s |\n|---|---:|---:|")
    worst = 0.0
    for cli, module in CLIS.items():
        for command in ["", *commands(args.bin / "python", module)]:
            argv = [str(args.bin / cli), *([command] if command else []), "--help"]
            times = time_help(argv, args.repeat)
            worst = max(worst, statistics.median(times))
            name = f"{cli} {command}".strip()
            print(f"| `{name} --help` | {statistics.median(times):.2f} | {max(times):.2f} |", flush=True)
    print(f"load after: {load_average()}; slowest median {worst:.2f} s")


if __name__ == "__main__":
    main()
