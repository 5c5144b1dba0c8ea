"""Structure standardization: small steps over RDKit molecules, all done by `rdMolStandardize`.

Every partner must turn the same structure into the same molecule, so the steps, their order and their
settings come from the plan's `[standardization]` table. The order is chosen so no RDKit pass runs twice:

1. parse the SMILES once (sanitized), whole: no whitespace or control character inside it, since RDKit
   would read `CC O` as `CC` named `O`;
   then MELLODDY-TUNER's size limit on the molecule *as given* (before salt stripping): rejected when it
   has more than `max_heavy_atoms` atoms (RDKit's GetNumAtoms of the parsed input, TUNER's count);
2. isotopes removed and stereo removed *before* the charge parent, because the charge parent's cleanup
   already removes the explicit hydrogens an isotope label leaves behind, and a stereo-free molecule
   has fewer tautomers to score;
3. charge parent: cleanup (normalize, reionize, metal disconnection), largest fragment, neutralize
   (RDKit's ChargeParent steps, without its second cleanup when neutralizing changed nothing);
4. a molecule left without heavy atoms by salt stripping is rejected;
5. canonical tautomer (the slowest step by far; capped at `max_tautomers`).

The functions modify the molecule in place (copies cost time on every molecule) and return it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rdkit import Chem, RDLogger
from rdkit.Chem.MolStandardize import rdMolStandardize

from data_prep.config import StandardizationConfig

RDLogger.DisableLog("rdApp.*")

#: Bumped whenever the steps change meaning, so cached results of older code are not reused.
STANDARDIZER_VERSION = "2"  # 2: whole-SMILES parse, TUNER size rule, scaffold network


class StructureError(ValueError):
    """A structure that cannot be standardized; the message is the reject reason."""


def parse_smiles(smiles: str) -> Chem.Mol:
    """Parse and sanitize; on failure say whether the text or the chemistry is wrong."""
    text = (smiles or "").strip()
    if not text:
        raise StructureError("empty SMILES")
    odd = next((ch for ch in text if ch.isspace() or not ch.isprintable()), None)
    if odd is not None:
        what = "whitespace" if odd.isspace() else "a control character"
        raise StructureError(f"SMILES {_short(text)!r} contains {what} ({odd!r}); a SMILES is one word, "
                             "without a name or comment after it")
    mol = Chem.MolFromSmiles(text)
    if mol is not None:
        return mol
    raw = Chem.MolFromSmiles(text, sanitize=False)
    if raw is None:
        raise StructureError(f"SMILES '{_short(text)}' cannot be parsed (syntax error)")
    problems = Chem.DetectChemistryProblems(raw)
    detail = problems[0].Message() if problems else "sanitization failed"
    raise StructureError(f"SMILES '{_short(text)}' is not valid chemistry: {detail}")


def remove_isotopes(mol: Chem.Mol) -> Chem.Mol:
    rdMolStandardize.IsotopeParentInPlace(mol, skipStandardize=True)
    return mol


def remove_stereo(mol: Chem.Mol) -> Chem.Mol:
    rdMolStandardize.StereoParentInPlace(mol, skipStandardize=True)
    return mol


def charge_parent(
    mol: Chem.Mol, params: rdMolStandardize.CleanupParameters, uncharger: rdMolStandardize.Uncharger
) -> Chem.Mol:
    """Cleanup, keep the largest fragment (salt stripping), neutralize: RDKit's ChargeParent, one pass lighter.

    `rdMolStandardize.ChargeParent` runs the (costly) cleanup a second time after neutralizing. Here the
    second cleanup runs only when the uncharger actually changed the molecule: on a molecule it left
    alone, a second cleanup repeats the first. This saves ~40 % of the step (see docs/data_prep.md for
    the one kind of molecule where RDKit's repeated cleanup differs).
    """
    rdMolStandardize.CleanupInPlace(mol, params)
    rdMolStandardize.FragmentParentInPlace(mol, params, skipStandardize=True)
    if any(atom.GetFormalCharge() for atom in mol.GetAtoms()):
        before = _charge_state(mol)
        uncharger.unchargeInPlace(mol)
        if _charge_state(mol) != before:
            rdMolStandardize.CleanupInPlace(mol, params)
    return mol


def _charge_state(mol: Chem.Mol) -> list[tuple[int, int]]:
    return [(atom.GetFormalCharge(), atom.GetTotalNumHs()) for atom in mol.GetAtoms()]


def check_size(mol: Chem.Mol, max_heavy_atoms: int) -> Chem.Mol:
    """TUNER's limit, on the molecule as given (salts and solvents included): at most `max_heavy_atoms`.

    Counted as TUNER counts (`GetNumAtoms` of the parsed SMILES: heavy atoms, plus hydrogens only where
    the SMILES keeps them as atoms, e.g. `[2H]`). TUNER's `max_num_atoms = 100` rejects 100 and more;
    the plan's `max_heavy_atoms = 99` is the same rule.
    """
    n = mol.GetNumAtoms()
    if n > max_heavy_atoms:
        raise StructureError(f"{n} atoms before salt stripping, more than max_heavy_atoms ({max_heavy_atoms}; "
                             "MELLODDY-TUNER's limit)")
    return mol


def check_heavy_atoms(mol: Chem.Mol) -> Chem.Mol:
    if mol.GetNumHeavyAtoms() == 0:
        raise StructureError("no heavy atoms after salt stripping")
    return mol


def canonical_tautomer(mol: Chem.Mol, enumerator: rdMolStandardize.TautomerEnumerator) -> Chem.Mol:
    return enumerator.Canonicalize(mol)


@dataclass
class Standardizer:
    """The plan's standardization profile, with RDKit's helper objects built once per process."""

    config: StandardizationConfig = field(default_factory=StandardizationConfig)

    def __post_init__(self) -> None:
        params = rdMolStandardize.CleanupParameters()
        params.maxTautomers = int(self.config.max_tautomers)
        # A plan that keeps stereo keeps it through the tautomer step too (RDKit drops it at centres a
        # tautomer shift could touch, e.g. an amino acid's alpha carbon).
        params.tautomerRemoveSp3Stereo = bool(self.config.remove_stereo)
        params.tautomerRemoveBondStereo = bool(self.config.remove_stereo)
        self.params = params
        self.uncharger = rdMolStandardize.Uncharger(params.doCanonical)
        self.enumerator = rdMolStandardize.TautomerEnumerator(params)

    def run(self, smiles: str, timings: dict[str, float] | None = None) -> Chem.Mol:
        """SMILES -> standardized molecule, or StructureError saying why not.

        `timings`, when given, accumulates seconds per step (for the benchmark's per-stage table).
        """
        clock = StageClock(timings)
        mol = check_size(parse_smiles(smiles), self.config.max_heavy_atoms)
        clock.tick("parse")
        step = "standardize"
        try:
            if self.config.remove_isotopes:
                remove_isotopes(mol)
            if self.config.remove_stereo:
                remove_stereo(mol)
            if self.config.charge_parent:
                charge_parent(mol, self.params, self.uncharger)
            else:
                rdMolStandardize.CleanupInPlace(mol, self.params)
            clock.tick("charge_parent")
            check_heavy_atoms(mol)
            if self.config.canonical_tautomer:
                step = "canonical tautomer"
                mol = canonical_tautomer(mol, self.enumerator)
                clock.tick("tautomer")
        except StructureError:
            raise
        except Exception as exc:  # RDKit raises assorted errors on exotic chemistry
            raise StructureError(f"RDKit failed in {step}: {exc}") from None
        return mol


class StageClock:
    """Adds elapsed seconds to named buckets; does nothing when no dict is given."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self._last = time.perf_counter() if timings is not None else 0.0

    def tick(self, name: str) -> None:
        if self.timings is None:
            return
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self._last
        self._last = now


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
