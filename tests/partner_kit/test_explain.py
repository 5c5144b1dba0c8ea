"""Atom contributions land on the atoms that decide the answer; neighbours equal a brute-force search."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.sparse as sp
from chem_helpers import NITRO, NITROBENZENE, chem_model  # noqa: F401  (session fixture)
from rdkit import Chem
from rdkit.DataStructs import BulkTanimotoSimilarity, CreateFromBitString

from data_prep.featurize import featurize_smiles
from data_prep.prepared import PreparedData
from partner_kit.explain import contribution_png
from partner_kit.neighbours import nearest, tanimoto
from partner_kit.predict import Predictor

NITRO_COMPOUNDS = [NITROBENZENE, "Cc1ccc([N+](=O)[O-])cc1N", "O=C(O)c1ccc([N+](=O)[O-])cc1", "CCCC[N+](=O)[O-]"]


@pytest.fixture(scope="module")
def predictor(chem_model):  # noqa: F811
    return Predictor(chem_model["model"], chem_model["key"], chem_model["prepared"])


@pytest.mark.parametrize("smiles", NITRO_COMPOUNDS)
def test_the_nitro_task_is_explained_by_the_nitro_atoms(predictor, smiles):
    detail = predictor.detail(smiles, positions=[0])
    contrib = detail["tasks"][0]["contributions"]
    mol = Chem.MolFromSmiles(contrib.smiles)
    nitro = {a for match in mol.GetSubstructMatches(NITRO) for a in match}
    assert len(contrib.weights) == mol.GetNumAtoms()
    weights = contrib.weights.round(3)
    # the nitro atoms come first; only the atom carrying the group may rank among them (it lies in every
    # environment of radius >= 1 around the nitro N), and the group holds more than all other atoms together
    assert contrib.top_atoms(1)[0] in nitro, (smiles, weights)
    assert nitro <= set(contrib.top_atoms(len(nitro) + 1)), (smiles, weights)
    others = [w for i, w in enumerate(contrib.weights) if i not in nitro]
    assert contrib.weights[sorted(nitro)].sum() > max(sum(others), 0.0), (smiles, weights)


def test_contributions_are_gradient_times_input_of_the_task_output(predictor):
    """The atom contributions add up to sum_j x_j · ∂f/∂x_j, checked against finite differences of the output."""
    import torch

    from partner_kit.batching import SparseBatch
    from partner_kit.explain import task_output

    explainer = predictor.explainer()
    contrib = explainer.contributions(NITRO_COMPOUNDS[1], 0)
    x, _, _ = predictor.featurize([NITRO_COMPOUNDS[1]])
    batch = SparseBatch.from_csr(x)
    values = batch.values.clone()
    with torch.no_grad():
        base = float(task_output(predictor.model, batch, values, 0))
        eps = 1e-3
        grads = []
        for i in range(len(values)):
            bumped = values.clone()
            bumped[i] += eps
            grads.append((float(task_output(predictor.model, batch, bumped, 0)) - base) / eps)
    expected = float(np.dot(values.numpy(), grads))
    assert contrib.weights.sum() == pytest.approx(expected, rel=1e-2, abs=1e-3)
    assert contrib.output == pytest.approx(base, abs=1e-5)


def test_a_contribution_map_is_a_png_drawing(predictor):
    from PIL import Image

    contrib = predictor.explainer().contributions(NITROBENZENE, 0)
    png = contribution_png(contrib, size=200)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (200, 200)
    assert len(image.convert("RGB").getcolors(1 << 20)) > 20  # coloured contours, not a blank square


def test_neighbours_equal_a_brute_force_search(predictor, chem_model):  # noqa: F811
    data = PreparedData.load(chem_model["prepared"], with_compounds=True)
    train = np.flatnonzero(data.folds != 0)
    for smiles in NITRO_COMPOUNDS[:2] + ["CC(=O)Oc1ccccc1C(=O)O"]:
        neighbours = predictor.detail(smiles, positions=[])["neighbours"]
        x, _ = featurize_smiles([smiles], chem_model["plan"].data, predictor.key)
        # brute force with RDKit's own Tanimoto on explicit bit vectors of the keyed columns
        query = CreateFromBitString("".join("1" if v else "0" for v in x.toarray()[0] > 0))
        refs = [CreateFromBitString("".join("1" if v else "0" for v in row > 0)) for row in data.x[train].toarray()]
        sims = np.array(BulkTanimotoSimilarity(query, refs))
        order = sorted(range(len(train)), key=lambda i: (-sims[i], i))[:5]
        assert [n.row for n in neighbours] == [int(train[i]) for i in order]
        assert [n.similarity for n in neighbours] == pytest.approx(sims[order].tolist())
        for n in neighbours:
            assert n.smiles == data.compounds["smiles"].iloc[n.row]
            assert n.measurements[0] == ("active" if data.y_class[n.row, 0] > 0 else "inactive")
            assert float(n.measurements[2]) == pytest.approx(data.y_regr[n.row, 0], abs=0.01)


def test_nearest_breaks_ties_by_row_and_handles_small_references():
    ref = sp.csr_matrix(np.array([[1, 0, 1], [1, 0, 1], [0, 1, 0]], dtype=np.float32))
    idx, sim = nearest(sp.csr_matrix(np.array([[1, 0, 1]], dtype=np.float32)), ref, 10)
    assert idx.tolist() == [[0, 1, 2]] and sim.tolist() == [[1.0, 1.0, 0.0]]
    assert tanimoto(sp.csr_matrix((1, 3), dtype=np.float32), ref).tolist() == [[0.0, 0.0, 0.0]]
