"""Prediction for scientists: the CLI and the web page on a small model trained on real Tox21 molecules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from pk_helpers import make_tasks, small_plan
from typer.testing import CliRunner

from data_prep.errors import InputError
from data_prep.featurize import featurize_smiles
from data_prep.key import generate_key, key_check_hash, load_key
from data_prep.prepared import PreparedData
from partner_kit.predict import Predictor, confidence_level, max_tanimoto
from partner_kit.training import fit
from partner_kit.web import create_app

N_MOLECULES = 240
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data):
    """A prepared directory and a model trained on it, from the first Tox21 molecules (real RDKit features)."""
    root = tmp_path_factory.mktemp("predict")
    key_path = generate_key(root / "secret.key")
    key = load_key(key_path)
    plan = small_plan(n_features=1024, hidden=(32,), max_epochs=3)
    raw = pd.read_csv(shared_data / "raw" / "tox21.csv.gz").head(N_MOLECULES * 2)
    x, errors = featurize_smiles(raw["smiles"].tolist(), plan.data, key)
    ok = np.flatnonzero([e is None for e in errors])[:N_MOLECULES]
    labels = raw.iloc[ok][["NR-AR", "SR-ARE"]].to_numpy()
    y = np.where(np.isnan(labels), 0.0, np.where(labels > 0, 1.0, -1.0)).astype(np.float32)
    tasks = make_tasks(2, 0)
    data = PreparedData(
        x=x[ok].astype(np.float32), folds=(np.arange(len(ok)) % 5).astype(np.int8), y_class=sp.csr_matrix(y),
        y_regr=sp.csr_matrix((len(ok), 0), dtype=np.float32), y_censor=sp.csr_matrix((len(ok), 0), dtype=np.int8),
        tasks=tasks, manifest={"plan_hash": plan.hash, "key_check_hash": key_check_hash(key)},
    )
    data.save(root / "prepared")
    fit(plan, data, root / "model", progress=False)
    return root, key_path, raw["smiles"].iloc[ok].tolist()


def test_every_input_row_keeps_its_place_and_bad_smiles_say_why(trained):
    root, key, _ = trained
    table = Predictor(root / "model", key).predict([ASPIRIN, "not-a-smiles", "CCO"]).table
    assert table["row"].tolist() == [1, 2, 3]
    assert table["error"].iloc[1] != "" and table["error"].iloc[0] == table["error"].iloc[2] == ""
    probs = table[["assay 100 >= 6", "assay 101 >= 6"]].to_numpy()
    assert np.isnan(probs[1]).all()
    assert ((probs[[0, 2]] > 0) & (probs[[0, 2]] < 1)).all()


def test_a_molecules_prediction_does_not_depend_on_the_batch(trained):
    root, key, smiles = trained
    predictor = Predictor(root / "model", key)
    alone = predictor.predict([ASPIRIN]).table.iloc[0]
    in_batch = predictor.predict(smiles[:50] + [ASPIRIN]).table.iloc[-1]
    assert alone["assay 100 >= 6"] == pytest.approx(in_batch["assay 100 >= 6"], abs=1e-6)


def test_wrong_key_is_refused(trained, tmp_path):
    root, _, _ = trained
    with pytest.raises(InputError, match="secret key does not match"):
        Predictor(root / "model", generate_key(tmp_path / "other.key"))


def test_training_molecules_are_fully_similar_to_training_set(trained):
    root, key, smiles = trained
    table = Predictor(root / "model", key, prepared=root / "prepared").predict(smiles[:3] + ["C"]).table
    sims = table["max_similarity_to_training"].to_numpy()
    assert sims[:3].max() == pytest.approx(1.0)  # at least one of them is in a training fold
    assert sims[3] < 0.3  # methane shares almost no bits with drug-like molecules


def test_max_tanimoto_matches_a_direct_computation():
    a = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=np.float32))
    b = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 1, 1], [1, 1, 1, 0]], dtype=np.float32))
    assert max_tanimoto(a, b) == pytest.approx([2 / 3, 1.0])


def test_confidence_levels_follow_the_documented_cut_offs():
    assert confidence_level(0.85, 0.6) == "high"
    assert confidence_level(0.85, None) == "high"
    assert confidence_level(0.75, 0.6) == "medium"
    assert confidence_level(0.85, 0.2) == "low"
    assert confidence_level(float("nan"), 0.9) == "low"


def test_predict_cli_writes_a_csv_and_reports_a_missing_smiles_column(trained, tmp_path):
    from partner_kit.cli import app

    root, key, _ = trained
    runner = CliRunner()
    good = tmp_path / "in.smi"
    good.write_text(f"{ASPIRIN} aspirin\nC1CC1C(=O\n")
    out = tmp_path / "pred.csv"
    result = runner.invoke(app, ["predict", "--model", str(root / "model"), "--key", str(key),
                                 "--input", str(good), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert table["name"].tolist() == ["aspirin", np.nan] and pd.isna(table["error"].iloc[0])
    bad = tmp_path / "in.csv"
    bad.write_text("structure\nCCO\n")
    result = runner.invoke(app, ["predict", "--model", str(root / "model"), "--key", str(key),
                                 "--input", str(bad), "--out", str(out)])
    assert result.exit_code == 2 and "no 'smiles' column" in result.output
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    result = runner.invoke(app, ["predict", "--model", str(root / "model"), "--key", str(key),
                                 "--input", str(empty), "--out", str(out)])
    assert result.exit_code == 2 and "is empty" in result.output


def test_web_page_shows_probabilities_structures_and_errors(trained):
    root, key, _ = trained
    client = create_app(Predictor(root / "model", key)).test_client()
    assert b"<form" in client.get("/").data
    page = client.post("/", data={"smiles": f"{ASPIRIN} aspirin\nnot-a-smiles"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "<svg" in html and "aspirin" in html and "assay 100 &gt;= 6" in html
    assert html.count('class="error"') == 1  # the invalid SMILES, in its own row
    empty = client.post("/", data={"smiles": ""})
    assert empty.status_code == 400 and "no molecules given" in empty.get_data(as_text=True)
    csv = client.post("/predict.csv", data={"smiles": ASPIRIN})
    assert csv.mimetype == "text/csv" and csv.get_data(as_text=True).startswith("row,name,smiles,error")


def test_web_upload_of_a_csv_uses_its_smiles_and_name_columns(trained):
    import io

    root, key, _ = trained
    client = create_app(Predictor(root / "model", key)).test_client()
    payload = {"file": (io.BytesIO(f"name,SMILES\naspirin,{ASPIRIN}\nethanol,CCO\n".encode()), "mols.csv")}
    page = client.post("/predict.csv", data=payload, content_type="multipart/form-data")
    table = pd.read_csv(io.StringIO(page.get_data(as_text=True)))
    assert table["name"].tolist() == ["aspirin", "ethanol"] and table["smiles"].tolist() == [ASPIRIN, "CCO"]
    bad = {"file": (io.BytesIO(b"structure\nCCO\n"), "mols.csv")}
    assert client.post("/predict.csv", data=bad, content_type="multipart/form-data").status_code == 400
    empty = {"file": (io.BytesIO(b""), "mols.csv")}
    reply = client.post("/predict.csv", data=empty, content_type="multipart/form-data")
    assert reply.status_code == 400 and "cannot be read" in reply.get_data(as_text=True)
