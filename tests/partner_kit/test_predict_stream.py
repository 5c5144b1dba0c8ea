"""Streaming prediction (issue #11): a file read, predicted and written a chunk at a time gives the same CSV as
the whole file at once — rows, order, row numbers and rejects — for every input format, and stays atomic."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from chem_helpers import ASPIRIN, NITROBENZENE, chem_model, example_smiles  # noqa: F401  (session fixture)
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from data_prep.errors import InputError
from partner_kit.molecule_files import iter_molecules, sd_records
from partner_kit.predict import Predictor, parse_smiles_lines, read_molecules
from partner_kit.predict_file import predict_file

BAD = ["not-a-smiles", "C1CC1C(=O", "C" * 150]  # syntax error, unclosed branch, over the plan's 99 heavy atoms


@pytest.fixture(scope="module")
def predictor(chem_model):  # noqa: F811
    return Predictor(chem_model["model"], chem_model["key"], chem_model["prepared"])


def _molecules() -> list[str]:
    smiles = example_smiles(12)
    return smiles[:4] + [BAD[0], ASPIRIN] + smiles[4:8] + [BAD[1], NITROBENZENE, BAD[2]] + smiles[8:]


def _inputs(tmp_path) -> dict[str, object]:
    """The same molecules as .smi (blank lines and names), .csv, .parquet and .sdf (one unreadable record)."""
    from rdkit import Chem

    smiles = _molecules()
    names = [f"m{i}" for i in range(len(smiles))]
    lines = []
    for i, (s, n) in enumerate(zip(smiles, names, strict=True)):
        lines.append(f"{s} {n}" if i % 3 else s)
        if i % 4 == 1:
            lines.append("")  # counted, not read: rows keep the input's line numbers
    smi = tmp_path / "in.smi"
    smi.write_text("\n".join(lines) + "\n")
    frame = pd.DataFrame({"id": names, "SMILES": smiles})
    csv = tmp_path / "in.csv"
    frame.to_csv(csv, index=False)
    parquet = tmp_path / "in.parquet"
    frame.to_parquet(parquet)
    records = []
    for s, n in zip(smiles, names, strict=True):
        mol = Chem.MolFromSmiles(s)
        block = Chem.MolToMolBlock(mol) if mol is not None else "\n  nonsense\n"
        records.append(n + block[block.index("\n"):] + "$$$$\n")
    sdf = tmp_path / "in.sdf"
    sdf.write_text("".join(records))
    return {"smi": smi, "csv": csv, "parquet": parquet, "sdf": sdf}


@pytest.mark.parametrize("kind", ["smi", "csv", "parquet", "sdf"])
def test_chunked_prediction_writes_the_whole_files_csv_byte_for_byte(predictor, tmp_path, kind):
    path = _inputs(tmp_path)[kind]
    whole = predictor.predict(read_molecules(path)).table  # the path before streaming: everything at once
    (tmp_path / "whole.csv").write_text(whole.to_csv(index=False))
    for chunk in (1, 2, 5, 10_000):
        out = tmp_path / f"chunk{chunk}.csv"
        written = predict_file(predictor, path, out, chunk_size=chunk)
        assert out.read_bytes() == (tmp_path / "whole.csv").read_bytes(), (kind, chunk)
        assert written.molecules == len(whole) and written.failed == int((whole["error"] != "").sum())
    assert written.failed >= 2 and whole["row"].is_monotonic_increasing
    if kind == "smi":  # blank lines are counted: rows are line numbers, not positions
        assert whole["row"].iloc[-1] > len(whole)


def test_chunks_number_rows_as_the_whole_file(tmp_path):
    text = "CCO a\n\n  \nc1ccccc1 benzene ring\r\nCC\x0cCCC\n\nN\n"
    path = tmp_path / "in.smi"
    path.write_bytes(text.encode())
    whole = parse_smiles_lines(path.read_text())
    for size in (1, 2, 3):
        chunks = list(iter_molecules(path, size))
        assert all(0 < len(c.smiles) <= size for c in chunks)
        assert [r for c in chunks for r in c.rows] == whole.rows == [1, 4, 5, 6, 8]
        assert [n for c in chunks for n in c.names] == whole.names
        assert [s for c in chunks for s in c.smiles] == whole.smiles


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="$a\n\r ", max_size=60), read_size=st.integers(1, 9))
def test_sd_records_split_as_the_whole_text_splits(text, read_size):
    assert list(sd_records(io.StringIO(text, newline=""), 10_000, read_size)) == text.split("$$$$")


def _verdict(record: str, max_lines: int) -> tuple[str, str | None]:
    """What the SD reader makes of a record: its name, and the record itself when short enough to parse."""
    lines = record.lstrip("\r\n").splitlines()
    return (lines[0].strip() if lines else ""), record if len(lines) <= max_lines else None


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="$a\n ", max_size=80), read_size=st.integers(1, 9), max_lines=st.integers(0, 4))
def test_sd_records_cut_over_long_records_without_changing_any_outcome(text, read_size, max_lines):
    streamed = [r for r in sd_records(io.StringIO(text, newline=""), max_lines, read_size) if r.strip()]
    whole = [r for r in text.split("$$$$") if r.strip()]
    assert [_verdict(r, max_lines) for r in streamed] == [_verdict(r, max_lines) for r in whole]


def test_a_failure_part_way_leaves_neither_output_nor_temporary_file(predictor, tmp_path):
    path = tmp_path / "in.smi"
    path.write_bytes(("\n".join(example_smiles(6)) + "\n").encode() + b"C\xff\xfeO\n")
    out = tmp_path / "pred.csv"
    out.write_text("old predictions\n")
    with pytest.raises(InputError, match="not UTF-8"):
        predict_file(predictor, path, out, chunk_size=2)
    assert out.read_text() == "old predictions\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.smi", "pred.csv"]


def test_cli_predict_with_tiny_chunks_writes_the_same_file(chem_model, tmp_path):  # noqa: F811
    from partner_kit.cli import app

    path = _inputs(tmp_path)["smi"]
    outputs = []
    for chunk in ("1", "500"):
        out = tmp_path / f"pred{chunk}.csv"
        result = CliRunner().invoke(app, ["predict", "--model", str(chem_model["model"]), "--key",
                                          str(chem_model["key"]), "--input", str(path), "--out", str(out),
                                          "--chunk", chunk])
        assert result.exit_code == 0, result.output
        assert f"{len(_molecules())} molecules, 3 could not be featurized" in " ".join(result.output.split())
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    result = CliRunner().invoke(app, ["predict", "--model", str(chem_model["model"]), "--key",
                                      str(chem_model["key"]), "--input", str(tmp_path / "absent.smi")])
    assert result.exit_code == 2 and "not found" in result.output


def test_write_csv_is_pandas_to_csv_byte_for_byte_with_nan_and_unbounded_intervals(chem_model):  # noqa: F811
    strict = Predictor(chem_model["model"], chem_model["key"], chem_model["prepared"], significance=0.0001)
    result = strict.predict(_molecules())
    table = result.table
    assert np.isinf(table.select_dtypes("number").to_numpy()).any()  # too few calibration values for 0.01 %
    assert table.isna().any().any() and (table["error"] != "").sum() == 3
    buffer = io.StringIO()
    result.write_csv(buffer)
    assert buffer.getvalue() == table.to_csv(index=False)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([-0.0, 1e-05, 0.5, 1.0]),
                       min_size=1, max_size=30), decimals=st.sampled_from([None, 4]))
def test_csv_cells_are_the_floats_pandas_writes(values, decimals):
    import csv

    from partner_kit.predict import _csv_cells

    block = np.array([values, values[::-1]], dtype=np.float64)
    if decimals is not None:
        with np.errstate(over="ignore", invalid="ignore"):  # np.round of huge values: inf / nan, as in the product
            block = np.round(block, decimals)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(_csv_cells(block).tolist())
    assert buffer.getvalue() == pd.DataFrame(block).to_csv(index=False, header=False)
