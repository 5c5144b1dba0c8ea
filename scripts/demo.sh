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
# A plan sized for a laptop: 4096-bit ECFP, one hidden layer of 256, 100 rounds of 5 local steps (averaging often
# captured more of the pooled uplift than 20 x 25 or 50 x 10, BENCHMARKS.md "Uplift"), up to 10 epochs of private
# fine-tuning.
"$B/consortium" init --out "$OUT/plan.toml" --name tox21-3-demo --fp-size 4096 --hidden 256 --dropout 0.2 \
  --rounds 100 --local-steps 5 --finetune-epochs 10 --min-partners 3 --force
# The demo's key is published (examples/demo-secret.key) so every run has the same scaffold folds and the table is
# reproducible; a published key protects nothing: a real consortium makes its own with `data-prep keygen`.
[ -f "$OUT/secret.key" ] || cp examples/demo-secret.key "$OUT/secret.key"
rm -rf "$OUT/run"   # a fresh run each time (structure standardization is cached under ~/.cache/fedqsar)
say "3/3 consortium simulate, 3 seeds, seed i tested on fold i (--rotate: three test folds, so the intervals rest
  on three times the test compounds): prepare A, B, C (RDKit standardization: about a minute the first time, cached
  after); per seed 100 federated rounds, each partner's single-partner baseline and the pooled bound (one model
  over all three partners' rows); then the table with 95 % bootstrap intervals and report.html"
# One torch thread: the demo's small matrices train faster on one thread than on two that contend.
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$B/consortium" simulate --plan "$OUT/plan.toml" --key "$OUT/secret.key" \
  --partners examples/tox21-3/A examples/tox21-3/B examples/tox21-3/C --out "$OUT/run" --seeds 3 --rotate --pooled --keep-checkpoints 2
echo
echo "Outputs in $OUT/run: report.html (open it in a browser: the table above, per-task plots, convergence,"
echo "what was compared with what; its numbers in report.json), comparison.json, summary.csv / summary.json,"
echo "and per seed folds/<its test fold>/: ledger.jsonl (one hash-chained line per round), checkpoints/round-NNN.safetensors"
echo "(the shared trunk), partners/<name>/{model,baseline,pooled} (federated, single-partner and pooled models)."
echo "Check an audit trail: $B/consortium status $OUT/run/folds/0"
