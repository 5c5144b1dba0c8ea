"""Ordinary mistakes around `data-prep prepare` are one `error:` line and exit code 2, never a traceback."""

from __future__ import annotations

import gzip
import os
import sqlite3

import pandas as pd
import pytest
from dp_helpers import KEY, MOLECULES, small_config, standard_inputs, t0_row, write_inputs
from typer.testing import CliRunner

from consortium.plan import Plan
from data_prep.cli import app
from data_prep.featurize import cache_namespace
from data_prep.prediction import read_smiles_table, write_prediction_rows
from data_prep.prepare import prepare


@pytest.fixture
def files(tmp_path):
    Plan().save(tmp_path / "plan.toml")
    (tmp_path / "secret.key").write_text(KEY.hex())
    standard_inputs(tmp_path / "in")
    return tmp_path


def run(files, *extra: str, inputs: str = "in", out: str = "out"):
    args = ["prepare", "--plan", str(files / "plan.toml"), "--key", str(files / "secret.key"),
            "--input", str(files / inputs), "--out", str(files / out) if out else out, *extra]
    return CliRunner().invoke(app, args)


def assert_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_truncated_gzip_names_the_file_instead_of_aborted(files):
    standard_inputs(files / "gz", fmt="csv.gz")
    data = (files / "gz" / "T1.csv.gz").read_bytes()
    (files / "gz" / "T1.csv.gz").write_bytes(data[: len(data) // 2])
    result = run(files, "--no-cache", inputs="gz")
    assert_error(result, "T1.csv.gz is truncated or corrupt")
    assert "Aborted" not in result.output


def test_out_that_is_a_file_or_under_a_file_is_refused_before_any_work(files):
    (files / "taken").write_text("a file")
    assert_error(run(files, "--no-cache", out="taken"), "--out", "is a file; give a directory path")
    assert_error(run(files, "--no-cache", out="taken/prepared"), "is under", "which is a file")
    assert (files / "taken").read_text() == "a file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_out_in_a_read_only_directory_is_refused(files):
    (files / "ro").mkdir(mode=0o555)
    assert_error(run(files, "--no-cache", out="ro/prepared"), "--out", "cannot be written")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc, where nothing can be created")
def test_out_that_cannot_be_created_is_refused(files):
    result = CliRunner().invoke(app, ["prepare", "--plan", str(files / "plan.toml"), "--key",
                                      str(files / "secret.key"), "--input", str(files / "in"),
                                      "--out", "/proc/self/fedqsar-prepared", "--no-cache"])
    assert_error(result, "--out /proc/self/fedqsar-prepared cannot be written")


def test_cache_that_is_a_file_or_not_a_database_is_refused(files):
    (files / "cachefile").write_text("not a directory")
    assert_error(run(files, "--cache", str(files / "cachefile")), "--cache", "is a file")
    bad = files / "cache"
    bad.mkdir()
    name = f"standardized-{cache_namespace(Plan.load(files / 'plan.toml').data)[:24]}.sqlite"
    (bad / name).write_bytes(b"this is no SQLite database, just text " * 100)
    assert_error(run(files, "--cache", str(bad)), "is not a usable cache database", "--no-cache")
    # ... while a good cache directory works, and works again from the cache.
    for _ in range(2):
        assert run(files, "--cache", str(files / "good-cache"), "-q").exit_code == 0
    assert sqlite3.connect(next((files / "good-cache").glob("*.sqlite"))).execute(
        "SELECT COUNT(*) FROM records").fetchone()[0] == len(MOLECULES)


@pytest.mark.parametrize("jobs", ["0", "-3"])
def test_zero_or_negative_jobs_is_an_error(files, jobs):
    assert_error(run(files, "--no-cache", "-j", jobs), "--jobs must be at least 1")


def test_smiles_with_trailing_text_is_rejected_with_its_reason_not_truncated(tmp_path):
    mols = MOLECULES + [("X1", "CC O"), ("X2", "CCO extra"), ("X3", "CC\tO"), ("X4", "\x00CC")]
    t1 = [(cid, "B1", "=", 1 if i % 2 else -1) for i, (cid, _) in enumerate(mols)]
    write_inputs(tmp_path / "in", [t0_row("B1", binary=True)], t1, mols)
    prepare(small_config(), KEY, tmp_path / "in", tmp_path / "out", cache_dir=False, n_jobs=1, progress=False)
    rejected = pd.read_parquet(tmp_path / "out" / "rejected.parquet")
    t2 = rejected[(rejected["file"] == "T2.csv") & rejected["id"].isin(["X1", "X2", "X3", "X4"])]
    assert sorted(t2["id"]) == ["X1", "X2", "X3", "X4"] and (t2["stage"] == "structure").all()
    assert t2["reason"].str.contains("whitespace|control character").all()
    smiles = set(pd.read_parquet(tmp_path / "out" / "compounds.parquet")["smiles"])
    assert "CC" not in smiles and "CCO" not in smiles  # nothing was silently truncated into a molecule


def test_prediction_input_keeps_a_name_only_where_the_format_has_one(tmp_path):
    (tmp_path / "in.smi").write_text("CCO ethanol\nc1ccccc1\tbenzene\n")
    (tmp_path / "in.txt").write_text("CCO\nCCO extra\n")
    assert read_smiles_table(tmp_path / "in.smi")["smiles"].tolist() == ["CCO", "c1ccccc1"]
    assert read_smiles_table(tmp_path / "in.txt")["smiles"].tolist() == ["CCO", "CCO extra"]
    with gzip.open(tmp_path / "in.csv.gz", "wt") as fh:
        fh.write("smiles\nCCO\nCC O\n")
    for name in ("in.txt", "in.csv.gz"):
        write_prediction_rows(small_config(), KEY, tmp_path / name, tmp_path / name.replace(".", "-"))
        errors = pd.read_parquet(tmp_path / name.replace(".", "-") / "molecules.parquet")["error"].tolist()
        assert pd.isna(errors[0]) and "contains whitespace" in errors[1]


def test_truncated_parquet_and_other_commands_out_are_clear_errors(files):
    standard_inputs(files / "pq", fmt="parquet")
    data = (files / "pq" / "T2.parquet").read_bytes()
    (files / "pq" / "T2.parquet").write_bytes(data[: len(data) // 2])
    assert_error(run(files, "--no-cache", inputs="pq"), "T2.parquet cannot be read")
    (files / "taken").write_text("a file")
    (files / "wide.csv").write_text("smiles,act\nCCO,1\nc1ccccc1,0\n")
    (files / "mols.smi").write_text("CCO ethanol\n")
    for args in (["import-wide", str(files / "wide.csv"), "--out", str(files / "taken")],
                 ["prepare-smiles", "--plan", str(files / "plan.toml"), "--key", str(files / "secret.key"),
                  "--input", str(files / "mols.smi"), "--out", str(files / "taken" / "x")],
                 ["prepare-smiles", "--plan", str(files / "plan.toml"), "--key", str(files / "secret.key"),
                  "--input", str(files / "mols.smi"), "--out", str(files / "ok"), "-j", "0"]):
        result = CliRunner().invoke(app, args)
        assert_error(result, "--jobs must be at least 1" if "-j" in args else "--out")


def test_a_full_disk_is_one_error_line_not_a_traceback(tmp_path):
    """ENOSPC from the OS (with the file it was writing) and as safetensors words it: one line, exit 1."""
    import errno

    import typer
    from safetensors import SafetensorError

    from data_prep.console import disk_full, friendly_errors

    target = tmp_path / "trunk.safetensors"
    demo = typer.Typer()

    @demo.command()
    @friendly_errors
    def write(kind: str) -> None:
        if kind == "os":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    for kind in ("os", "safetensors"):
        result = CliRunner().invoke(demo, [kind])
        assert result.exit_code == 1, result.output
        assert "error: the disk is full" in result.output and "Traceback" not in result.output
    assert str(target) in " ".join(CliRunner().invoke(demo, ["os"]).output.split())
    assert not disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not disk_full(ValueError("os error 28"))
