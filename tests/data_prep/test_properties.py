"""Property-based tests (hypothesis): whatever a partner feeds `data-prep prepare` or writes into a plan, the
answer is a prepared directory that accounts for every row, or one `error:` line with exit code 2 — never a
traceback. 350 generated plans + 200 generated input directories per run (~30 s on a quiet core)."""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path

import pandas as pd
from dp_helpers import KEY, check_contract, small_rules
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from consortium.plan import Plan
from data_prep.cli import app
from data_prep.config import FingerprintConfig, PrepConfig
from data_prep.errors import InputError
from data_prep.validate import normalize_ids

FAST = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------------- plans

BASE = Plan().to_dict()
KEYS = [(t, k) for t, v in BASE.items() if isinstance(v, dict) for k in v]
ANY_VALUE = st.one_of(
    st.integers(-10**6, 10**7), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(max_size=6), st.lists(st.floats(-20, 20), max_size=3), st.lists(st.integers(-5, 5000), max_size=3),
    st.dictionaries(st.sampled_from(["OTHER", "ADME", "bogus"]), st.lists(st.floats(-20, 20), max_size=3),
                    max_size=2),
)
EDIT = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(KEYS), ANY_VALUE),
    st.tuples(st.just("drop_key"), st.sampled_from(KEYS), st.none()),
    st.tuples(st.just("drop_table"), st.sampled_from(sorted({t for t, _ in KEYS})), st.none()),
    st.tuples(st.just("add_key"), st.sampled_from(sorted({t for t, _ in KEYS})), st.text(min_size=1, max_size=6)),
)


def edited_plan(edits) -> dict:
    raw = copy.deepcopy(BASE)
    for kind, where, value in edits:
        if kind == "set" and where[0] in raw:
            raw[where[0]][where[1]] = value
        elif kind == "drop_key" and where[0] in raw:
            raw[where[0]].pop(where[1], None)
        elif kind == "drop_table":
            raw.pop(where, None)
        elif kind == "add_key" and where in raw:
            raw[where]["x_" + value] = 1
    return raw


@settings(max_examples=350, **FAST)
@given(st.lists(EDIT, min_size=1, max_size=3))
def test_any_edited_plan_loads_valid_or_is_refused_with_an_input_error(edits):
    raw = edited_plan(edits)
    for load in (lambda: Plan.from_dict(raw, "plan.toml"), lambda: PrepConfig.from_plan(raw, "plan.toml")):
        try:
            loaded = load()
        except InputError as exc:
            assert str(exc).startswith("plan.toml: ") and "\n" not in str(exc)
            continue
        data = loaded.data if isinstance(loaded, Plan) else loaded
        # Whatever loads is usable: the checks data_prep relies on hold.
        assert 1 <= data.fingerprint.radius <= 6 and isinstance(data.fingerprint.binary, bool)
        assert data.standardization.max_heavy_atoms >= 1 and 2 <= data.folds.n_folds <= 100
        assert all(lo < hi for lo, hi in data.tasks.credibility.values())
        assert data.tasks.min_train_actives >= 0 and math.isfinite(data.tasks.censored_weight)
        if isinstance(loaded, Plan):
            assert loaded.to_dict() == raw | {"reference_hash": raw.get("reference_hash", "")}


# ---------------------------------------------------------------------------------------------- inputs

SMILES = ["c1ccccc1O", "CCO", "CC(=O)[O-].[Na+]", "c1ccc2ccccc2c1", "C1CCNCC1", "OC(=O)c1ccccc1", "CCN(CC)CC",
          "C[C@H](N)C(=O)O", "[2H]C([2H])O", "c1ccc(Cn2c3ccccc3c3ccccc32)cc1", "O=c1cccc[nH]1", "C" * 101,
          "C1CC", "c1cccc1", "C(C)(C)(C)(C)C", "CC O", "CCO extra", "CC\tO", "\x00CC", "", " ", "[Na+].[Cl-]",
          "xyz", "C1=CC=CC=C1", "N#N"]
IDS = ["C1", "C2", "C3", "C4", "C5", "C6", "7", "7.0", "", " C1"]
ASSAYS = ["A1", "A2", "3", "3.0", ""]
QUALIFIERS = ["", "=", "<", ">", "<=", ">=", "≥", "~", "?", "=="]
VALUES = ["1", "-1", "0", "5.5", "7", "8.2", "4", "13", "2.0", "-0.5", "abc", "", "nan", "inf", "1e3", "6.0"]
BOOLS = ["true", "false", "1", "0", "", "yes", "maybe", "TRUE"]

t2_rows = st.lists(st.tuples(st.sampled_from(IDS), st.one_of(st.sampled_from(SMILES),
                                                             st.text("CNOc1()=[]+-#@ \t", max_size=8))),
                   min_size=1, max_size=12)
t1_rows = st.lists(st.tuples(st.sampled_from(IDS), st.sampled_from(ASSAYS), st.sampled_from(QUALIFIERS),
                             st.one_of(st.sampled_from(VALUES), st.floats(-3, 15).map(lambda v: f"{v:.2f}"))),
                   min_size=1, max_size=30)
# T0 is short and hand-written, and a malformed T0 value stops the run by design: mostly valid rows, so most
# examples get through to the row-level checks, with a bad value now and then.
t0_rows = st.lists(st.fixed_dictionaries({
    "input_assay_id": st.sampled_from(["A1", "A2", "3"] * 10 + ["3.0", ""]),
    "assay_type": st.sampled_from(["OTHER", "ADME", "other", "AUX_HTS", "BOGUS", "OTHER"]),
    "use_in_regression": st.sampled_from(["false"] * 12 + ["true", "", "maybe"]),
    "is_binary": st.sampled_from(["true", "false", "TRUE", "0", "1"] * 6 + ["yes", "maybe"]),
    "expert_threshold_1": st.sampled_from(["", "", "", "6", "5.5", "6"] * 4 + ["abc"]),
    "direction": st.sampled_from(["", "high", "low"] * 10 + ["up"]),
}), min_size=1, max_size=3, unique_by=lambda row: row["input_assay_id"])


def small_plan_file(directory: Path) -> Path:
    plan = Plan(data=PrepConfig(fingerprint=FingerprintConfig(size=64), tasks=small_rules()))
    return plan.save(directory / "plan.toml")


@settings(max_examples=200, **FAST)
@given(t0=t0_rows, t1=t1_rows, t2=t2_rows, fmt=st.sampled_from(["csv", "csv", "parquet"]))
def test_any_input_directory_is_prepared_with_every_row_accounted_for_or_refused_cleanly(t0, t1, t2, fmt):
    with tempfile.TemporaryDirectory(prefix="h2-prop-") as tmp:
        tmp = Path(tmp)
        (tmp / "secret.key").write_text(KEY.hex())
        inp = tmp / "in"
        inp.mkdir()
        frames = {
            "T0": pd.DataFrame(t0),
            "T1": pd.DataFrame(t1, columns=["input_compound_id", "input_assay_id", "standard_qualifier",
                                            "standard_value"]),
            "T2": pd.DataFrame(t2, columns=["input_compound_id", "smiles"]),
        }
        for name, frame in frames.items():
            if fmt == "parquet":
                frame.astype(str).to_parquet(inp / f"{name}.parquet", index=False)
            else:
                frame.to_csv(inp / f"{name}.csv", index=False)
        result = CliRunner().invoke(app, ["prepare", "--plan", str(small_plan_file(tmp)), "--key",
                                          str(tmp / "secret.key"), "--input", str(inp), "--out", str(tmp / "out"),
                                          "--no-cache", "-j", "1", "-q"])
        assert result.exit_code in (0, 2), (result.output, result.exception)
        event(f"exit {result.exit_code}")
        if result.exit_code == 2:
            event("error: " + " ".join(result.output.split())[7:40])
            assert "error:" in result.output and "Traceback" not in result.output
            assert not (tmp / "out" / "manifest.json").exists()
            return
        data = check_contract(tmp / "out", len(t1))  # T1 rows used + T1 rows rejected == T1 rows
        rejected = pd.read_parquet(tmp / "out" / "rejected.parquet")
        t2_name = data.manifest["inputs"]["T2"]["file"]
        rejected_t2 = set(rejected.loc[rejected["file"] == t2_name, "row"])
        used_ids = {c for ids in data.compounds["input_compound_ids"] for c in ids}
        ids = normalize_ids(pd.Series([str(i).strip() for i, _ in t2]))
        for row, cid in enumerate(ids, start=1):  # every T2 row is in a matrix row or rejected
            assert row in rejected_t2 or cid in used_ids, (row, cid)
        for row, (_, smiles) in enumerate(t2, start=1):  # a SMILES with text after a space is never truncated
            if any(ch.isspace() or ch == "\x00" for ch in smiles.strip()):
                assert row in rejected_t2, (row, smiles)
        assert not any(any(ch.isspace() or ch == "\x00" for ch in s) for s in data.compounds["smiles"])
