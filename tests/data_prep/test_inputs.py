"""Malformed input files: each gives its documented file-level error or row-level reject, never a traceback."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest
from dp_helpers import KEY, MOLECULES, small_config, standard_inputs, t0_row, write_inputs
from typer.testing import CliRunner

from data_prep.cli import app
from data_prep.errors import InputError
from data_prep.prepare import prepare


def run(inputs: Path, tmp_path: Path) -> tuple[dict, pd.DataFrame]:
    out = tmp_path / "out"
    summary = prepare(small_config(), KEY, inputs, out, cache_dir=tmp_path / "cache", n_jobs=1, progress=False)
    return summary, pd.read_parquet(out / "rejected.parquet")


def edit(path: Path, func) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    func(frame).to_csv(path, index=False)


def reasons(rejected: pd.DataFrame, file: str) -> list[str]:
    return rejected[rejected["file"] == file]["reason"].tolist()


# ---- file-level problems stop the run with file, column and example row ----

def test_missing_column_names_the_file_and_column(tmp_path):
    inputs = standard_inputs(tmp_path / "in")
    edit(inputs / "T1.csv", lambda f: f.drop(columns="standard_qualifier"))
    with pytest.raises(InputError, match="T1.csv: missing column\\(s\\) standard_qualifier"):
        run(inputs, tmp_path)


def test_wrong_type_in_t0_names_column_and_row(tmp_path):
    inputs = standard_inputs(tmp_path / "in")
    edit(inputs / "T0.csv", lambda f: f.assign(is_binary=["True", "maybe"]))
    with pytest.raises(InputError, match="T0.csv: column is_binary must be true or false "
                                         "\\(row 2: is_binary='maybe'\\)"):
        run(inputs, tmp_path)


def test_value_column_without_any_number_is_a_file_level_error(tmp_path):
    inputs = standard_inputs(tmp_path / "in")
    edit(inputs / "T1.csv", lambda f: f.assign(standard_value="active"))
    with pytest.raises(InputError, match="T1.csv: column standard_value holds no finite number \\(row 1"):
        run(inputs, tmp_path)


def test_empty_file_and_header_only_file(tmp_path):
    inputs = standard_inputs(tmp_path / "in")
    (inputs / "T2.csv").write_text("")
    with pytest.raises(InputError, match="T2.csv is empty; it needs a header line with the columns "
                                         "input_compound_id, smiles"):
        run(inputs, tmp_path)
    (inputs / "T2.csv").write_text("input_compound_id,smiles\n")
    with pytest.raises(InputError, match="T2.csv has a header but no data rows"):
        run(inputs, tmp_path)


def test_empty_gzipped_file(tmp_path):
    inputs = standard_inputs(tmp_path / "in")
    (inputs / "T1.csv").unlink()
    with gzip.open(inputs / "T1.csv.gz", "wt") as fh:
        fh.write("")
    with pytest.raises(InputError, match="T1.csv.gz is empty"):
        run(inputs, tmp_path)


def test_duplicate_assay_ids_in_t0_stop_the_run(tmp_path):
    inputs = standard_inputs(tmp_path / "in")
    edit(inputs / "T0.csv", lambda f: f.assign(input_assay_id=["B1", "B1"]))
    with pytest.raises(InputError, match="T0.csv: input_assay_id 'B1' appears in rows \\[1, 2\\]"):
        run(inputs, tmp_path)


def test_missing_input_file_and_directory(tmp_path):
    inputs = standard_inputs(tmp_path / "in")
    (inputs / "T0.csv").unlink()
    with pytest.raises(InputError, match="has no T0 file; expected one of T0.csv, T0.csv.gz, T0.parquet"):
        run(inputs, tmp_path)
    with pytest.raises(InputError, match="input directory .* not found"):
        run(tmp_path / "nowhere", tmp_path)


def test_two_files_for_one_table_are_refused(tmp_path):
    inputs = standard_inputs(tmp_path / "in")
    (inputs / "T2.csv.gz").write_bytes(gzip.compress((inputs / "T2.csv").read_bytes()))
    with pytest.raises(InputError, match="several T2 files"):
        run(inputs, tmp_path)


def test_bad_direction_and_threshold_are_file_level(tmp_path):
    inputs = standard_inputs(tmp_path / "in")
    edit(inputs / "T0.csv", lambda f: f.assign(direction=["high", "up"]))
    with pytest.raises(InputError, match="column direction must be 'high'"):
        run(inputs, tmp_path)
    inputs = standard_inputs(tmp_path / "in2")
    edit(inputs / "T0.csv", lambda f: f.assign(expert_threshold_1=["", "six"]))
    with pytest.raises(InputError, match="column expert_threshold_1 is not a finite number"):
        run(inputs, tmp_path)


# ---- row-level problems are rejected and the run goes on ----

def test_row_level_problems_are_rejected_with_reasons(tmp_path):
    t0 = [t0_row("B1", binary=True), t0_row("D1", binary=False, regression=True, thresholds=(6.0,)),
          t0_row("X1", binary=True, assay_type="MYSTERY")]
    t2 = MOLECULES + [("BAD", "C1CC"), ("NOSMI", ""), ("DUP", "CCO"), ("DUP", "CCN"), ("M01", "c1ccccc1O")]
    labels = [1, -1, 1, -1, 1, -1, 1, -1, 1, -1]
    values = [7.5, 5.0, 6.5, 4.0, 8.0, 5.5, 6.1, 3.5, 7.0, 5.9]
    t1 = [(c, "B1", "=", lab) for (c, _), lab in zip(MOLECULES, labels, strict=True)]
    t1 += [(c, "D1", "=", v) for (c, _), v in zip(MOLECULES, values, strict=True)]
    bad_rows = [
        ("M01", "D1", "=", "NaN"),          # NaN value
        ("M01", "D1", "=", "inf"),          # not finite
        ("M01", "D1", "=", "abc"),          # not a number
        ("M01", "D1", "=", ""),             # empty
        ("M01", "D1", "!", "6"),            # unknown qualifier
        ("M01", "NOPE", "=", "6"),          # unknown assay
        ("GHOST", "D1", "=", "6"),          # compound not in T2
        ("BAD", "B1", "=", "1"),            # compound with bad SMILES
        ("NOSMI", "B1", "=", "1"),          # compound with empty SMILES
        ("DUP", "B1", "=", "1"),            # ambiguous compound id
        ("M02", "X1", "=", "1"),            # assay with unknown assay_type
        ("M02", "B1", "=", "2"),            # binary value not +-1
        ("M02", "B1", "<", "1"),            # binary with censored qualifier
        ("M02", "D1", "=", "13"),           # outside the credible range
    ]
    write_inputs(tmp_path / "in", t0, t1 + bad_rows, t2)
    summary, rejected = run(tmp_path / "in", tmp_path)
    t1_reasons = rejected[rejected["file"] == "T1.csv"].set_index("row")["reason"]
    first = len(t1) + 1
    expected = [
        "standard_value 'NaN' is not a number", "standard_value 'inf' is not finite",
        "standard_value 'abc' is not a number", "empty standard_value", "unknown standard_qualifier '!'",
        "input_assay_id NOPE is not in T0", "input_compound_id GHOST is not in T2",
        "structure of compound BAD rejected: SMILES 'C1CC' cannot be parsed",
        "compound rejected in T2: empty smiles",
        "compound rejected in T2: input_compound_id appears in several rows with different smiles",
        "assay rejected in T0: unknown assay_type", "binary assay value 2 must be +1",
        "binary assays take '=' only, not '<'", "standard_value 13 outside the credible range [3, 12]",
    ]
    for i, text in enumerate(expected):
        assert t1_reasons[first + i].startswith(text), (i, t1_reasons[first + i])
    t2_reasons = rejected[rejected["file"] == "T2.csv"].set_index("row")["reason"]
    assert t2_reasons[11].startswith("SMILES 'C1CC' cannot be parsed")
    assert t2_reasons[12] == "empty smiles"
    assert t2_reasons[13] == t2_reasons[14] == "input_compound_id appears in several rows with different smiles"
    assert t2_reasons[15] == "duplicate row of an input_compound_id already read (same smiles)"
    assert reasons(rejected, "T0.csv")[0].startswith("unknown assay_type 'MYSTERY'")
    # the valid part went through, and every T1 row is accounted for
    assert summary["counts"]["rows"] == 10
    assert summary["counts"]["t1_rows_used"] + (rejected["file"] == "T1.csv").sum() == len(t1) + len(bad_rows)


def test_all_inputs_unusable_is_a_clear_error_not_a_crash(tmp_path):
    write_inputs(tmp_path / "in", [t0_row("B1", binary=True)], [("A", "B1", "=", 1)], [("A", "")])
    with pytest.raises(InputError, match="T2.csv: no usable row"):
        run(tmp_path / "in", tmp_path)


# ---- the command line shows the same problems as one line, exit code 2, no traceback ----

@pytest.mark.parametrize("breakage, message", [
    (lambda d: edit(d / "T1.csv", lambda f: f.drop(columns="standard_value")), "missing column(s) standard_value"),
    (lambda d: (d / "T0.csv").write_text(""), "T0.csv is empty"),
    (lambda d: (d / "T0.csv").write_bytes(b"\xff\xfe\x00bad"), "T0.csv"),
])
def test_cli_prints_one_error_line_and_exits_2(tmp_path, breakage, message):
    inputs = standard_inputs(tmp_path / "in")
    breakage(inputs)
    plan = tmp_path / "plan.toml"
    from consortium.plan import Plan

    Plan(data=small_config()).save(plan)
    key = tmp_path / "secret.key"
    key.write_text(KEY.hex() + "\n")
    result = CliRunner().invoke(app, ["prepare", "--plan", str(plan), "--key", str(key), "--input", str(inputs),
                                      "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "c"), "-j", "1"])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and message in result.output
    assert "Traceback" not in result.output


def test_cli_rejects_a_bad_key_file(tmp_path):
    inputs = standard_inputs(tmp_path / "in")
    from consortium.plan import Plan

    Plan().save(tmp_path / "plan.toml")
    (tmp_path / "secret.key").write_text("not hex")
    result = CliRunner().invoke(app, ["prepare", "--plan", str(tmp_path / "plan.toml"), "--key",
                                      str(tmp_path / "secret.key"), "--input", str(inputs), "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 2 and "is not hex text" in " ".join(result.output.split())
