"""Why the model says so: per-atom contributions to one task's output, drawn as an RDKit similarity map.

Gradient × input on the fingerprint: for the molecule's keyed fingerprint x and the task's output f (the logit for
classification, the standardized value for regression), bit j contributes x_j · ∂f/∂x_j. The partner holds the key,
so it maps each keyed column back to its RDKit Morgan bit, and RDKit's bit info says which atom environments
(centre atom, radius) set that bit; a bit's contribution is shared equally over its occurrences and, within one,
over the atoms of the environment. Everything here runs at the partner on its private model; nothing is sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator

from data_prep.config import FingerprintConfig
from data_prep.fingerprint import MorganFingerprinter, key_permutation
from partner_kit.batching import SparseBatch
from partner_kit.model import MultitaskModel


@dataclass
class AtomContributions:
    """Per-atom contributions (same atom order as `Chem.MolFromSmiles(smiles)`) and their sum over atoms."""

    smiles: str
    weights: np.ndarray
    output: float  # the task's output (logit or standardized value) the contributions explain

    def top_atoms(self, n: int) -> list[int]:
        return [int(i) for i in np.argsort(-self.weights, kind="stable")[:n]]


def _environment_atoms(mol: Chem.Mol, centre: int, radius: int) -> list[int]:
    if radius == 0:
        return [centre]
    bonds = Chem.FindAtomEnvironmentOfRadiusN(mol, radius, centre)
    atoms = {centre}
    for b in bonds:
        bond = mol.GetBondWithIdx(b)
        atoms.update((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()))
    return sorted(atoms)


def task_output(model: MultitaskModel, batch: SparseBatch, values: torch.Tensor, position: int) -> torch.Tensor:
    """One task's output as a differentiable function of the fingerprint values (eval mode: no dropout).

    This is `MultitaskModel.forward` with the input layer written out, because the training path of
    `SparseInput` does not propagate gradients to the input values.
    """
    trunk = model.trunk
    h = F.embedding_bag(batch.indices, trunk.input.weight, batch.offsets, mode="sum",
                        per_sample_weights=values) + trunk.input.bias
    h = trunk.act(h)
    for layer in trunk.hidden:
        h = trunk.act(layer(h))
    logits, regr = model.heads(h)
    n_class = model.heads.n_class
    return logits[:, position] if position < n_class else regr[:, position - n_class]


class Explainer:
    """Atom contributions for standardized SMILES, in the plan's fingerprint and the partner's keyed columns."""

    def __init__(self, model: MultitaskModel, fingerprint: FingerprintConfig, key: bytes) -> None:
        self.model = model
        self.config = fingerprint
        self.generator = MorganFingerprinter(fingerprint).generator
        self.permutation = key_permutation(key, fingerprint.size)

    def contributions(self, smiles: str, position: int) -> AtomContributions:
        """Contributions to task `position` (its column in the model: classification tasks first).

        `smiles` must be the *standardized* SMILES (what the fingerprint of a prediction is computed from).
        """
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise ValueError(f"standardized SMILES {smiles!r} cannot be read by RDKit")
        output = rdFingerprintGenerator.AdditionalOutput()
        output.AllocateBitInfoMap()
        counts = self.generator.GetCountFingerprint(mol, additionalOutput=output).GetNonzeroElements()
        info = output.GetBitInfoMap()
        bits = np.array(sorted(counts), dtype=np.int64)
        cols = self.permutation[bits].astype(np.int64)
        values = np.ones(len(bits), np.float32) if self.config.binary else \
            np.array([counts[int(b)] for b in bits], np.float32)
        order = np.argsort(cols)
        x = sp.csr_matrix((values[order], cols[order], [0, len(bits)]), shape=(1, self.config.size))
        batch = SparseBatch.from_csr(x)
        value_tensor = batch.values.clone().requires_grad_(True)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad():
                out = task_output(self.model, batch, value_tensor, position)
                (grad,) = torch.autograd.grad(out.sum(), value_tensor)
        finally:
            self.model.train(was_training)
        per_bit = (value_tensor.detach() * grad).numpy().astype(np.float64)
        weights = np.zeros(mol.GetNumAtoms())
        for bit, contribution in zip(bits[order], per_bit, strict=True):
            occurrences = info.get(int(bit), ())
            for centre, radius in occurrences:
                atoms = _environment_atoms(mol, centre, radius)
                weights[atoms] += contribution / len(occurrences) / len(atoms)
        return AtomContributions(smiles=smiles, weights=weights, output=float(out.detach()))


def contribution_png(contrib: AtomContributions, size: int = 300) -> bytes:
    """The molecule with its atom contributions as an RDKit similarity map (PNG; green raises the output, pink
    lowers it). PNG, not SVG: the map's contour grid is ~1 MB as SVG and ~30 kB as PNG; grid 0.2 Å keeps one
    map at ~40 ms."""
    from rdkit.Chem.Draw import SimilarityMaps, rdMolDraw2D

    mol = Chem.MolFromSmiles(contrib.smiles)
    drawer = rdMolDraw2D.MolDraw2DCairo(size, size)
    weights = [float(w) for w in contrib.weights]
    if not any(weights):  # a flat map: nothing to contour, draw the plain structure
        rdMolDraw2D.PrepareAndDrawMolecule(drawer, mol)
    else:
        SimilarityMaps.GetSimilarityMapFromWeights(mol, weights, draw2d=drawer, gridResolution=0.2)
    drawer.FinishDrawing()
    return drawer.GetDrawingText()
