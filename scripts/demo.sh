#!/usr/bin/env bash
# The README demo: a 3-partner Tox21 consortium (examples/tox21-3/{A,B,C}, T0/T1/T2 input files) federated
# embedded on this machine: each partner's data is prepared, the partners train a shared trunk over
# federated rounds (their heads stay private), each also trains a single-partner baseline, and the
# per-partner table compares them on the test fold. A few minutes on 2 cores.
#   bash scripts/demo.sh [OUT_DIR]        (default ./demo-run, gitignored)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-demo-run}
say() { printf '\ndemo: %s\n' "$*"; }
say "1/3 setting up .venv (skipped when already up to date)"
bash scripts/setup.sh
B=.venv/bin
mkdir -p "$OUT"
say "2/3 writing the consortium plan ($OUT/plan.toml) and the partners' secret key ($OUT/secret.key)"
# A plan sized for a laptop: 4096-bit ECFP, one hidden layer of 256, 30 rounds of 25 local steps (partners keep
# their best round; at 12 rounds the last round was still the best, i.e. the federated models were under-trained).
"$B/consortium" init --out "$OUT/plan.toml" --name tox21-3-demo --fp-size 4096 --hidden 256 --dropout 0.2 \
  --rounds 30 --local-steps 25 --min-partners 3 --force
[ -f "$OUT/secret.key" ] || "$B/data-prep" keygen --out "$OUT/secret.key"
rm -rf "$OUT/run"   # a fresh run each time (structure standardization is cached under ~/.cache/fedqsar)
say "3/3 consortium simulate: prepare A, B, C (RDKit standardization: about a minute the first time, cached after),
  30 federated rounds of 25 local steps, then each partner's single-partner baseline, then the comparison table"
"$B/consortium" simulate --plan "$OUT/plan.toml" --key "$OUT/secret.key" \
  --partners examples/tox21-3/A --partners examples/tox21-3/B --partners examples/tox21-3/C --out "$OUT/run"
echo
echo "Outputs in $OUT/run: summary.csv / summary.json (the table above), ledger.jsonl (one hash-chained line"
echo "per round), checkpoints/round-NNN.safetensors (the shared trunk), partners/<name>/model (each partner's"
echo "federated model with its private heads), partners/<name>/baseline (single-partner models)."
echo "Check the audit trail: $B/consortium status $OUT/run"
