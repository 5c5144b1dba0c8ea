"""The bundled demo consortium (examples/tox21-3): reproducible from the public source, and it prepares."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from dp_helpers import KEY, check_contract

from data_prep.config import PrepConfig
from data_prep.prepare import prepare

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEMO = EXAMPLES / "tox21-3"


def test_demo_files_are_small_and_private_per_partner():
    files = sorted(DEMO.glob("*/*"))
    assert [f.relative_to(DEMO).as_posix() for f in files] == [
        f"{p}/{n}" for p in "ABC" for n in ("T0.csv", "T1.csv.gz", "T2.csv")]
    assert sum(f.stat().st_size for f in files) < 1_000_000
    ids = {p: set(pd.read_csv(DEMO / p / "T2.csv")["input_compound_id"]) for p in "ABC"}
    assays = {p: set(pd.read_csv(DEMO / p / "T0.csv")["input_assay_id"].astype(str)) for p in "ABC"}
    assert not ids["A"] & ids["B"] and not ids["B"] & ids["C"]
    assert all(len(a) == 12 for a in assays.values()) and not assays["A"] & assays["B"]


def test_demo_script_reproduces_the_committed_files(tmp_path, shared_data):
    subprocess.run([sys.executable, str(EXAMPLES / "make_demo_data.py"), str(tmp_path)], check=True,
                   capture_output=True)
    for f in DEMO.glob("*/*"):
        assert (tmp_path / f.relative_to(DEMO)).read_bytes() == f.read_bytes(), f


@pytest.mark.slow
def test_demo_partner_prepares_with_the_default_plan(tmp_path, std_cache):
    prepare(PrepConfig(), KEY, DEMO / "A", tmp_path / "A", cache_dir=std_cache, progress=False)
    data = check_contract(tmp_path / "A", len(pd.read_csv(DEMO / "A" / "T1.csv.gz")))
    assert data.y_class.shape[1] == 12
