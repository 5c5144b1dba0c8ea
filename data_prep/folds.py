"""Scaffold folds: the same Murcko scaffold lands in the same fold at every partner holding the same key.

A molecule without rings has an empty scaffold; giving all of them one fold would pile every acyclic
compound of every partner into a single fold. They are hashed by their own standardized SMILES instead
(under a different HMAC domain, so no acyclic SMILES can collide with a scaffold).
"""

from __future__ import annotations

import hashlib
import hmac

from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold

SCAFFOLD_DOMAIN = b"fedqsar fold scaffold v1:"
ACYCLIC_DOMAIN = b"fedqsar fold acyclic v1:"


def scaffold_smiles(mol: Chem.Mol) -> str:
    """Canonical SMILES of the Murcko scaffold; '' when the molecule has no ring."""
    if mol.GetRingInfo().NumRings() == 0:
        return ""
    return Chem.MolToSmiles(MurckoScaffold.GetScaffoldForMol(mol))


def assign_fold(key: bytes, scaffold: str, smiles: str, n_folds: int) -> int:
    """Keyed HMAC-SHA256 of the scaffold (or, when acyclic, of the SMILES) modulo n_folds."""
    message = SCAFFOLD_DOMAIN + scaffold.encode() if scaffold else ACYCLIC_DOMAIN + smiles.encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % n_folds
