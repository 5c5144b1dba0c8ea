"""T1 validated in slices and aggregated on integer codes (issue #11): the output must not change at all.

Every kind of rejected row, replicates and censored values go through `prepare` with slices of 3 records and
with one slice for the whole file; the prepared directories must be byte-identical (manifest timings aside).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dp_helpers import KEY, MOLECULES, small_config, t0_row, write_inputs

import data_prep.validate as validate
from data_prep.aggregate import aggregate
from data_prep.io import read_inputs
from data_prep.prepare import prepare
from data_prep.validate import Rejects, validate_t0, validate_t1, validate_t2


def _messy_inputs(directory: Path) -> Path:
    t0 = [t0_row("B1", binary=True), t0_row("D1", binary=False, regression=True, thresholds=(6.0,)),
          t0_row("D2", binary=False, regression=True, thresholds=(5.0, 7.0)),
          t0_row("X1", binary=False, assay_type="NOT-A-TYPE")]
    labels = [1, -1, 1, -1, 1, -1, 1, -1, 1, -1]
    values = [7.5, 5.0, 6.5, 4.0, 8.0, 5.5, 6.1, 3.5, 7.0, 5.9]
    t1 = [(cid, "B1", "=", lab) for (cid, _), lab in zip(MOLECULES, labels, strict=True)]
    t1 += [(cid, "D1", "=", v) for (cid, _), v in zip(MOLECULES, values, strict=True)]
    t1 += [(cid, "D2", "<" if i % 3 == 0 else "=", v + 0.3) for i, ((cid, _), v) in
           enumerate(zip(MOLECULES, values, strict=True))]
    t1 += [
        ("M01", "D1", "=", 7.9), ("M01", "D1", ">", 9.0),      # replicate + contradicting censored value
        ("M02", "B1", "=", 1), ("M03", "D1", "<", 4.0),         # binary tie (M02 is -1 above), agreeing '<'
        ("M04", "NOPE", "=", 5), ("M99", "D1", "=", 5),         # unknown assay, unknown compound
        ("", "D1", "=", 5), ("M05", "", "=", 5),                # empty ids
        ("M05", "D1", "~~", 5), ("M05", "D1", "=", ""),         # bad qualifier, empty value
        ("M06", "D1", "=", "five"), ("M06", "D1", "=", "inf"),  # not a number, not finite
        ("M07", "B1", "<", 1), ("M07", "B1", "=", 2),           # binary with '<', binary value 2
        ("M08", "D1", "=", 42.0), ("M09", "X1", "=", 5),        # outside the credible range, rejected assay
        ("M10", "D2", ">", 4.0), ("M10", "D2", "<", 9.0),       # '<' and '>' without '=' (M10 has '=' above)
        (" M03 ", "D2", "=", 6.6), ("M04", "D1.0", "=", 5.0),   # spaces; an id that is not in T0
    ]
    return write_inputs(directory, t0, t1, MOLECULES)


def _manifest(path: Path) -> dict:
    m = json.loads((path / "manifest.json").read_text())
    for k in ("timings_s", "created_utc"):
        m.pop(k, None)
    for k in ("wall_s", "worker_s", "cache_lookup_s", "cache_hits", "computed"):
        m.get("standardization", {}).pop(k, None)
    return m


def _assert_identical(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        if name == "manifest.json":
            assert _manifest(a) == _manifest(b)
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_prepare_in_slices_of_three_records_is_byte_identical_to_one_slice(tmp_path, monkeypatch, std_cache):
    inputs = _messy_inputs(tmp_path / "in")
    config = small_config()
    monkeypatch.setattr(validate, "T1_CHUNK_ROWS", 10**9)
    prepare(config, KEY, inputs, tmp_path / "whole", progress=False, n_jobs=1, cache_dir=std_cache)
    monkeypatch.setattr(validate, "T1_CHUNK_ROWS", 3)
    prepare(config, KEY, inputs, tmp_path / "sliced", progress=False, n_jobs=1, cache_dir=std_cache)
    _assert_identical(tmp_path / "whole", tmp_path / "sliced")
    rejected = pd.read_parquet(tmp_path / "sliced" / "rejected.parquet")
    reasons = " | ".join(rejected["reason"])
    for expected in ("not in T0", "not in T2", "unknown standard_qualifier", "empty standard_value",
                     "is not a number", "is not finite", "binary assays take '=' only", "must be +1",
                     "outside the credible range", "contradicts the merged value", "a tie cannot be merged"):
        assert expected in reasons, expected


def _validated(directory: Path, chunk_rows: int | None):
    tables = read_inputs(directory)
    rejects = Rejects()
    assays = validate_t0(tables["T0"], small_config().tasks, rejects)
    compounds, rejected_ids = validate_t2(tables["T2"], rejects)
    records = validate_t1(tables["T1"], assays, compounds, rejected_ids, rejects, chunk_rows=chunk_rows)
    return records, rejects.frame()


def test_validate_t1_returns_id_codes_and_the_same_records_and_rejects_in_any_slicing(tmp_path):
    inputs = _messy_inputs(tmp_path / "in")
    whole, whole_rejects = _validated(inputs, None)
    assert isinstance(whole["input_compound_id"].dtype, pd.CategoricalDtype)
    assert isinstance(whole["input_assay_id"].dtype, pd.CategoricalDtype)
    assert whole["input_assay_id"].cat.codes.dtype.itemsize <= 4  # a code per record, not a string
    assert "M03" in set(whole["input_compound_id"])  # " M03 " read as M03
    for chunk in (1, 2, 7):
        part, part_rejects = _validated(inputs, chunk)
        pd.testing.assert_frame_equal(whole, part)
        pd.testing.assert_frame_equal(whole_rejects, part_rejects)


def test_aggregate_on_codes_equals_aggregate_on_strings(tmp_path):
    records, _ = _validated(_messy_inputs(tmp_path / "in"), 4)
    records["row"] = records["input_compound_id"].cat.codes.to_numpy().astype(np.int64) // 2  # shared rows
    as_text = records.astype({"input_compound_id": object, "input_assay_id": object})
    out = {}
    for name, frame in (("codes", records.copy()), ("text", as_text.copy())):
        rejects = Rejects()
        groups = aggregate(frame, {"B1"}, rejects, "T1.csv")
        out[name] = (groups.astype({"input_assay_id": object}), frame["group"].to_numpy(), rejects.frame())
    pd.testing.assert_frame_equal(out["codes"][0], out["text"][0])
    assert np.array_equal(out["codes"][1], out["text"][1])
    pd.testing.assert_frame_equal(out["codes"][2], out["text"][2])


@pytest.mark.slow
def test_a_generated_industrial_partner_prepares_identically_in_slices(tmp_path, monkeypatch, shared_data):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import make_industrial_partner as mip

    inputs = tmp_path / "in"
    mip.make_partner(400, inputs, seed=1, source=shared_data / "raw" / "moses_train.csv.gz")
    cache = tmp_path / "cache"
    monkeypatch.setattr(validate, "T1_CHUNK_ROWS", 10**9)
    prepare(small_config(32000), KEY, inputs, tmp_path / "whole", progress=False, n_jobs=1, cache_dir=cache)
    monkeypatch.setattr(validate, "T1_CHUNK_ROWS", 997)
    prepare(small_config(32000), KEY, inputs, tmp_path / "sliced", progress=False, n_jobs=1, cache_dir=cache)
    _assert_identical(tmp_path / "whole", tmp_path / "sliced")
