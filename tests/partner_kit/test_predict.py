"""Prediction for scientists: the CLI, the page and the JSON API on a small model trained on real example molecules.

The model (tests/partner_kit/chem_helpers.py) is trained on the bundled tox21-3 structures with labels known from
the structure (nitro group, carboxylic acid, Crippen logP), so it needs no ../shared data.
"""

from __future__ import annotations

import io
import json
import re
import time

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from chem_helpers import ASPIRIN, NITROBENZENE, chem_model  # noqa: F401  (session fixture)
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from data_prep.errors import InputError
from data_prep.key import generate_key
from partner_kit.predict import Predictor, max_tanimoto, read_molecules, size_error
from partner_kit.web import create_app

NITRO_TASK, ACID_TASK, LOGP_TASK = "assay 100 >= 6", "assay 101 >= 6", "assay 102 value"
HUGE = "C" * 20_000


@pytest.fixture(scope="module")
def predictor(chem_model):  # noqa: F811
    return Predictor(chem_model["model"], chem_model["key"], chem_model["prepared"])


@pytest.fixture(scope="module")
def client(predictor):
    return create_app(predictor).test_client()


def run_cli(*args: str):
    from partner_kit.cli import app

    return CliRunner().invoke(app, list(args))


def test_every_input_row_keeps_its_place_and_bad_smiles_say_why(predictor):
    table = predictor.predict([ASPIRIN, "not-a-smiles", "CCO"]).table
    assert table["row"].tolist() == [1, 2, 3]
    assert table["error"].iloc[1] != "" and table["error"].iloc[0] == table["error"].iloc[2] == ""
    probs = table[[NITRO_TASK, ACID_TASK]].to_numpy()
    assert np.isnan(probs[1]).all() and table[f"{NITRO_TASK} set"].iloc[1] == ""
    assert ((probs[[0, 2]] > 0) & (probs[[0, 2]] < 1)).all()
    assert table["standardized_smiles"].iloc[0] == ASPIRIN


def test_the_model_learned_the_known_labels_and_sets_say_so(predictor):
    table = predictor.predict([NITROBENZENE, "CCCCCC(=O)O", "CCCCCC"]).table
    assert table[NITRO_TASK].iloc[0] > 0.5 > table[NITRO_TASK].iloc[2]
    assert table[f"{NITRO_TASK} set"].iloc[0] in ("active", "both")
    assert table[f"{ACID_TASK} set"].iloc[1] in ("active", "both")
    assert table[f"{ACID_TASK} set"].iloc[2] in ("inactive", "both")
    p_active, p_inactive = table[f"{ACID_TASK} p(active)"], table[f"{ACID_TASK} p(inactive)"]
    assert p_active.iloc[1] > p_inactive.iloc[1] and p_active.iloc[2] < p_inactive.iloc[2]
    low, value, high = (table[f"{LOGP_TASK}{s}"].to_numpy() for s in (" low", "", " high"))
    assert (low < value).all() and (value < high).all()
    assert np.allclose(high - value, value - low, atol=2e-4)  # one half-width per task


def test_a_molecules_prediction_does_not_depend_on_the_batch(predictor, chem_model):  # noqa: F811
    alone = predictor.predict([ASPIRIN]).table.iloc[0]
    batch = predictor.predict(chem_model["smiles"][:50] + [ASPIRIN] + ["C" * 300]).table
    in_batch = batch.iloc[50]
    for column in (NITRO_TASK, f"{NITRO_TASK} p(active)", LOGP_TASK, f"{LOGP_TASK} high"):
        assert alone[column] == pytest.approx(in_batch[column], abs=1e-6)
    assert alone[f"{ACID_TASK} set"] == in_batch[f"{ACID_TASK} set"]
    assert batch["smiles"].tolist() == chem_model["smiles"][:50] + [ASPIRIN] + ["C" * 300]


def test_wrong_key_is_refused(chem_model, tmp_path):  # noqa: F811
    with pytest.raises(InputError, match="secret key does not match"):
        Predictor(chem_model["model"], generate_key(tmp_path / "other.key"))


def test_training_molecules_are_fully_similar_to_training_set(predictor, chem_model):  # noqa: F811
    data = chem_model["data"]
    train_smiles = [s for s, f in zip(chem_model["smiles"], data.folds, strict=True) if f != 0][:3]
    table = predictor.predict(train_smiles + ["C"]).table
    sims = table["max_similarity_to_training"].to_numpy()
    assert sims[:3] == pytest.approx(1.0)
    assert sims[3] < 0.5


def test_max_tanimoto_matches_a_direct_computation():
    a = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=np.float32))
    b = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 1, 1], [1, 1, 1, 0]], dtype=np.float32))
    assert max_tanimoto(a, b) == pytest.approx([2 / 3, 1.0])


def test_oversized_molecules_are_refused_before_rdkit_reads_them(predictor, client):
    assert "longer than" in size_error(HUGE, 100)
    big_ring_free = "C" * 150  # short enough to read, too many heavy atoms
    assert "150 heavy atoms" in size_error(big_ring_free, 100)
    assert size_error("C" * 60 + ".[Na+].[Cl-]", 100) is None  # salts: the largest fragment counts
    started = time.perf_counter()
    table = predictor.predict([HUGE, ASPIRIN]).table
    assert time.perf_counter() - started < 5
    assert "longer than" in table["error"].iloc[0] and table["error"].iloc[1] == ""
    started = time.perf_counter()
    page = client.post("/", data={"smiles": f"{HUGE}\n{ASPIRIN}"})
    api = client.post("/api/predict", json={"smiles": [HUGE]})
    assert time.perf_counter() - started < 5
    assert page.status_code == 200 and "longer than" in page.get_data(as_text=True)
    assert api.status_code == 200 and "longer than" in api.json["rows"][0]["error"]


def test_predict_cli_writes_a_csv_with_conformal_columns_and_input_line_numbers(chem_model, tmp_path):  # noqa: F811
    good = tmp_path / "in.smi"
    good.write_text(f"{ASPIRIN} aspirin\n\nC1CC1C(=O\n{NITROBENZENE}\n")
    out = tmp_path / "pred.csv"
    result = run_cli("predict", "--model", str(chem_model["model"]), "--key", str(chem_model["key"]),
                     "--input", str(good), "--out", str(out), "--significance", "0.1")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert table["row"].tolist() == [1, 3, 4]  # the blank line 2 is counted, not skipped
    assert table["name"].tolist() == ["aspirin", np.nan, np.nan] and pd.isna(table["error"].iloc[0])
    assert {f"{NITRO_TASK} set", f"{NITRO_TASK} p(active)", f"{LOGP_TASK} low"} <= set(table.columns)
    assert "confidence" not in " ".join(table.columns)


@pytest.mark.parametrize(("content", "message"), [
    ("structure\nCCO\n", "no 'smiles' column"),
    ("", "is empty"),
    ("smiles\n", "no molecules"),
])
def test_predict_cli_refuses_unusable_csv_inputs(chem_model, tmp_path, content, message):  # noqa: F811
    bad = tmp_path / "in.csv"
    bad.write_text(content)
    result = run_cli("predict", "--model", str(chem_model["model"]), "--key", str(chem_model["key"]),
                     "--input", str(bad), "--out", str(tmp_path / "out.csv"))
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_predict_cli_refuses_a_bad_out_a_blank_smi_and_a_broken_model(chem_model, tmp_path):  # noqa: F811
    import shutil

    smi = tmp_path / "in.smi"
    smi.write_text(f"{ASPIRIN}\n")
    common = ["predict", "--key", str(chem_model["key"]), "--input", str(smi)]
    result = run_cli(*common, "--model", str(chem_model["model"]), "--out", str(tmp_path))
    assert result.exit_code == 2 and "is a directory" in result.output
    (tmp_path / "file").write_text("x")
    result = run_cli(*common, "--model", str(chem_model["model"]), "--out", str(tmp_path / "file" / "p.csv"))
    assert result.exit_code == 2 and "is a file" in result.output
    blank = tmp_path / "blank.smi"
    blank.write_text("\n \n")
    result = run_cli("predict", "--key", str(chem_model["key"]), "--input", str(blank),
                     "--model", str(chem_model["model"]), "--out", str(tmp_path / "p.csv"))
    assert result.exit_code == 2 and "no molecules" in result.output
    broken = tmp_path / "model"
    shutil.copytree(chem_model["model"], broken)
    (broken / "model.json").write_text('{"plan": ')
    result = run_cli(*common, "--model", str(broken), "--out", str(tmp_path / "p.csv"))
    assert result.exit_code == 2 and "model.json" in result.output and "Traceback" not in result.output
    (broken / "model.json").write_text("[]")
    result = run_cli(*common, "--model", str(broken), "--out", str(tmp_path / "p.csv"))
    assert result.exit_code == 2 and "model.json" in result.output
    result = run_cli(*common, "--model", str(chem_model["model"]), "--out", str(tmp_path / "p.csv"),
                     "--significance", "1.5")
    assert result.exit_code == 2 and "between 0 and 1" in result.output


def test_sdf_input_reads_every_record_and_keeps_unreadable_ones(tmp_path):
    from rdkit import Chem

    block = Chem.MolToMolBlock(Chem.MolFromSmiles(ASPIRIN))
    sdf = tmp_path / "in.sdf"
    sdf.write_text(f"aspirin{block[block.index(chr(10)):]}\n$$$$\nbroken\n  nonsense\n$$$$\n")
    molecules = read_molecules(sdf)
    assert molecules.names == ["aspirin", "broken"] and molecules.rows == [1, 2]
    assert Chem.CanonSmiles(molecules.smiles[0]) == Chem.CanonSmiles(ASPIRIN)
    assert molecules.errors[0] is None and "SD record 2" in molecules.errors[1]


def test_web_page_shows_probabilities_sets_structures_and_errors(client):
    assert b"<form" in client.get("/").data
    page = client.post("/", data={"smiles": f"{ASPIRIN} aspirin\nnot-a-smiles"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "<svg" in html and "aspirin" in html and "assay 100 &gt;= 6" in html
    assert html.count('class="error"') == 1  # the invalid SMILES, in its own row
    assert 'data-set="' in html and "https://" not in html  # conformal sets; nothing loaded from outside
    empty = client.post("/", data={"smiles": ""})
    assert empty.status_code == 400 and "no molecules given" in empty.get_data(as_text=True)
    csv = client.post("/predict.csv", data={"smiles": ASPIRIN})
    assert csv.mimetype == "text/csv" and csv.get_data(as_text=True).startswith("row,name,smiles,")


def test_web_upload_of_a_csv_uses_its_smiles_and_name_columns(client):
    payload = {"file": (io.BytesIO(f"name,SMILES\naspirin,{ASPIRIN}\nethanol,CCO\n".encode()), "mols.csv")}
    page = client.post("/predict.csv", data=payload, content_type="multipart/form-data")
    table = pd.read_csv(io.StringIO(page.get_data(as_text=True)))
    assert table["name"].tolist() == ["aspirin", "ethanol"] and table["smiles"].tolist() == [ASPIRIN, "CCO"]
    bad = {"file": (io.BytesIO(b"structure\nCCO\n"), "mols.csv")}
    assert client.post("/predict.csv", data=bad, content_type="multipart/form-data").status_code == 400
    for content in (b"", b"smiles\n"):
        reply = client.post("/", data={"file": (io.BytesIO(content), "mols.csv")}, content_type="multipart/form-data")
        assert reply.status_code == 400 and 'class="error"' in reply.get_data(as_text=True)


def test_api_predict_returns_the_cli_table_as_json(client, predictor):
    reply = client.post("/api/predict", json={"smiles": [ASPIRIN, "xx"], "names": ["aspirin", "bad"]})
    assert reply.status_code == 200
    body = reply.json
    assert body["tasks"] == [NITRO_TASK, ACID_TASK, LOGP_TASK] and body["significance"] == 0.2
    expected = predictor.predict([ASPIRIN]).table.iloc[0]
    first, second = body["rows"]
    assert first["name"] == "aspirin" and first[NITRO_TASK] == pytest.approx(expected[NITRO_TASK])
    assert first[f"{ACID_TASK} set"] == expected[f"{ACID_TASK} set"]
    assert second["error"] and second[NITRO_TASK] is None and second["row"] == 2


@pytest.mark.parametrize(("body", "status", "message"), [
    ("not json", 400, "JSON object"),
    (json.dumps([1, 2]), 400, "JSON object"),
    (json.dumps({"smiles": "CCO"}), 400, "list of strings"),
    (json.dumps({"smiles": []}), 400, "list of strings"),
    (json.dumps({"smiles": [1]}), 400, "list of strings"),
    (json.dumps({"smiles": ["CCO"], "names": ["a", "b"]}), 400, "names"),
    (json.dumps({"smiles": ["C"] * 10_001}), 400, "at most 10000"),
    (json.dumps({"smiles": ["C" * 1000] * 3000}), 413, "at most 2 MB"),
])
def test_api_refuses_malformed_and_oversized_requests_with_a_message(client, body, status, message):
    reply = client.post("/api/predict", data=body, content_type="application/json")
    assert reply.status_code == status and message in reply.json["error"]


def test_api_molecule_gives_contributions_and_neighbours(client):
    reply = client.post("/api/molecule", json={"smiles": NITROBENZENE})
    assert reply.status_code == 200
    body = reply.json
    assert body["standardized_smiles"] and len(body["tasks"]) == 3
    assert all(len(t["atom_contributions"]) == 9 for t in body["tasks"])  # 9 heavy atoms, every task drawn
    assert len(body["neighbours"]) == 5 and body["neighbours"][0]["similarity"] >= body["neighbours"][-1]["similarity"]
    one = client.post("/api/molecule", json={"smiles": NITROBENZENE, "task": 1}).json
    assert [t["atom_contributions"] is not None for t in one["tasks"]] == [False, True, False]
    assert client.post("/api/molecule", json={"smiles": NITROBENZENE, "task": 7}).status_code == 400
    assert client.post("/api/molecule", json={"smiles": ["CCO"]}).status_code == 400
    bad = client.post("/api/molecule", json={"smiles": "xx"}).json
    assert bad["error"] and bad["tasks"] == []


def test_detail_page_draws_maps_and_lists_neighbours(client):
    page = client.get("/molecule", query_string={"smiles": NITROBENZENE})
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert html.count('class="map"') == 3 and 'id="neighbours"' in html
    maps = re.findall(r'src="(molecule/map\.png\?[^"]+)"', html)
    assert len(maps) == 3
    image = client.get("/" + maps[0].replace("&amp;", "&"))
    assert image.status_code == 200 and image.mimetype == "image/png" and image.data[:4] == b"\x89PNG"
    one = client.get("/molecule", query_string={"smiles": NITROBENZENE, "task": 2}).get_data(as_text=True)
    assert one.count('class="map"') == 1 and "task=2" in one
    assert client.get("/molecule/map.png", query_string={"smiles": NITROBENZENE, "task": 9}).status_code == 400
    assert client.get("/molecule/map.png", query_string={"smiles": HUGE, "task": 0}).status_code == 400
    assert client.get("/molecule").status_code == 400
    assert client.get("/molecule", query_string={"smiles": HUGE}).status_code == 200  # refused, with its reason
    assert client.get("/nowhere").status_code == 404


SMILES_PARTS = ["C", "c1ccccc1", "N", "O", "[N+](=O)[O-]", "(", ")", "=", "#", "[", "]", "1", "%10", ".", "Cl",
                "[Na+]", "@", "/", "\\", " ", "\t", "\x00", "é", "*", "[2H]", "C" * 120]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=40), st.lists(st.sampled_from(SMILES_PARTS), max_size=12).map("".join)),
                min_size=1, max_size=6))
def test_api_never_fails_and_keeps_every_row(client, smiles):
    reply = client.post("/api/predict", json={"smiles": smiles})
    assert reply.status_code == 200, reply.get_data(as_text=True)
    rows = reply.json["rows"]
    assert [r["smiles"] for r in rows] == smiles and [r["row"] for r in rows] == list(range(1, len(smiles) + 1))
    for row in rows:
        values = [row[t] for t in reply.json["tasks"]]
        assert (row["error"] != "") == any(v is None for v in values)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                              lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                                  st.sampled_from(["smiles", "names", "task", "x"]), inner, max_size=3),
                              max_leaves=8).map(lambda v: json.dumps(v).encode())))
def test_api_answers_any_body_with_json_and_never_a_server_error(client, body):
    for path in ("/api/predict", "/api/molecule"):
        reply = client.post(path, data=body, content_type="application/json")
        assert reply.status_code in (200, 400), (path, body, reply.status_code)
        assert reply.is_json and (reply.status_code == 200 or reply.json["error"])


def test_a_long_result_shows_its_first_rows_and_points_to_the_csv(client, monkeypatch):
    import partner_kit.web as web

    monkeypatch.setattr(web, "PAGE_LIMIT", 2)
    html = client.post("/", data={"smiles": f"{ASPIRIN}\nCCO\nCCN"}).get_data(as_text=True)
    assert html.count("<tr data-row=") == 2 and "3 molecules; showing the first 2" in html
    assert 'id="download"' not in html and 'id="csv"' not in html
    short = client.post("/", data={"smiles": ASPIRIN}).get_data(as_text=True)
    assert 'id="download"' in short and 'id="csv"' in short
