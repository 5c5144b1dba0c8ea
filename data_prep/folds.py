"""Scaffold folds: related chemotypes land in the same fold at every partner holding the same key.

Two plan methods (`folds.method`):

- `scaffold_network` (default, MELLODDY-TUNER's `scaffold_folding`): the Murcko scaffold, reduced to at most
  three rings by RDKit's scaffold network when it has more, with TUNER's priority rules for which ring
  subset to keep. A 3-ring core with a phenyl or a pyridine hung on it is one group, so close analogues
  cannot sit on both sides of the test boundary.
- `scaffold`: the Murcko scaffold itself (finer groups; the method of kit version 1).

A molecule without rings has an empty scaffold; giving all of them one fold (as TUNER does) would pile
every acyclic compound of every partner into a single fold. They are hashed by their own standardized
SMILES instead (under a different HMAC domain, so no acyclic SMILES can collide with a scaffold).
Scaffolds with three rings or fewer are their own reduced scaffold and are hashed under the same domain by
both methods, so they keep their fold when a consortium switches method.
"""

from __future__ import annotations

import functools
import hashlib
import hmac

from rdkit import Chem
from rdkit.Chem import rdMolDescriptors
from rdkit.Chem.Scaffolds import MurckoScaffold, rdScaffoldNetwork

SCAFFOLD_DOMAIN = b"fedqsar fold scaffold v1:"
ACYCLIC_DOMAIN = b"fedqsar fold acyclic v1:"
FOLD_METHODS = ("scaffold_network", "scaffold")
#: TUNER's target: scaffolds with more rings are reduced to a sub-scaffold with this many (or closest).
MAX_RINGS = 3


def scaffold_smiles(mol: Chem.Mol) -> str:
    """Canonical SMILES of the Murcko scaffold; '' when the molecule has no ring."""
    if mol.GetRingInfo().NumRings() == 0:
        return ""
    return Chem.MolToSmiles(MurckoScaffold.GetScaffoldForMol(mol))


def _network_params() -> rdScaffoldNetwork.ScaffoldNetworkParams:
    # TUNER's settings: ring removal only (no generic or attachment-point scaffolds), starting from a
    # Murcko scaffold, which has no side chains to prune.
    params = rdScaffoldNetwork.ScaffoldNetworkParams()
    params.flattenIsotopes = True
    params.includeGenericBondScaffolds = False
    params.includeGenericScaffolds = False
    params.includeScaffoldsWithAttachments = False
    params.includeScaffoldsWithoutAttachments = True
    params.pruneBeforeFragmenting = True
    return params


def _ring_sizes(mol: Chem.Mol) -> list[int]:
    return [len(ring) for ring in mol.GetRingInfo().AtomRings()]


def _priority(node: str) -> tuple:
    """TUNER's order of preference among scaffold-network nodes (smallest tuple wins).

    Closest to three rings; then with a macrocycle (> 9 atoms); fewest rotatable bonds (non-strict
    count); most bridgehead atoms; most spiro atoms; with a ring of unusual size (not 5 or 6); most
    heterocycles; fewest aromatic rings; and the SMILES itself to break ties.
    """
    mol = Chem.MolFromSmiles(node)
    sizes = _ring_sizes(mol)
    return (
        abs(rdMolDescriptors.CalcNumRings(mol) - MAX_RINGS),
        not any(n > 9 for n in sizes),
        rdMolDescriptors.CalcNumRotatableBonds(mol, False),
        -rdMolDescriptors.CalcNumBridgeheadAtoms(mol),
        -rdMolDescriptors.CalcNumSpiroAtoms(mol),
        not any(n > 6 or n < 5 for n in sizes),
        -rdMolDescriptors.CalcNumHeterocycles(mol),
        rdMolDescriptors.CalcNumAromaticRings(mol),
        node,
    )


@functools.lru_cache(maxsize=65536)
def network_scaffold(murcko: str) -> str:
    """TUNER's reduced scaffold of a Murcko scaffold SMILES: itself with <= 3 rings, else the preferred
    node of its scaffold network; '' for an acyclic molecule. Cached: many molecules share a scaffold."""
    if not murcko:
        return ""
    mol = Chem.MolFromSmiles(murcko)
    if mol is None or rdMolDescriptors.CalcNumRings(mol) <= MAX_RINGS:
        return murcko
    nodes = [str(n) for n in rdScaffoldNetwork.CreateScaffoldNetwork([mol], _network_params()).nodes]
    nodes = [n for n in nodes if Chem.MolFromSmiles(n) is not None]
    return min(nodes, key=_priority) if nodes else murcko


def assign_fold(key: bytes, scaffold: str, smiles: str, n_folds: int) -> int:
    """Keyed HMAC-SHA256 of the scaffold (or, when acyclic, of the SMILES) modulo n_folds."""
    message = SCAFFOLD_DOMAIN + scaffold.encode() if scaffold else ACYCLIC_DOMAIN + smiles.encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % n_folds
