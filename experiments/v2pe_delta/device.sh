#!/usr/bin/env bash
# The GPU scale on one lent H100/H200, unattended, inside a device loan (docs/experiments/v2pe_delta.md):
#   BUDGET_S=540 bash experiments/v2pe_delta/device.sh              # on the lent machine, in the repo root
# runs `python -m experiments.v2pe_delta run --scale gpu` for at most BUDGET_S seconds (every stage resumes),
# then writes what it finished to $OUT (the device tool brings it back): REPORT.md, results.json, the plots
# and v2pe_delta_gpu_state.tar (settings and the results of every complete run, a few hundred KB). A later
# loan that carries that tar back as STATE=<path> continues: finished runs are kept, data is rebuilt.
# DRY_RUN=1 runs every stage at toy size on the CPU (tests/test_experiment_v2pe_delta.py).
set -uo pipefail
cd "$(dirname "$0")/../.."
BUDGET_S=${BUDGET_S:-540}
WORK=${WORK:-/tmp/v2pe_delta_gpu}
DEST=${OUT:-runs/v2pe_delta_gpu_out}
STATE=${STATE:-}
SCALE=${SCALE:-gpu}
start=$(date +%s)
mkdir -p "$DEST" "$WORK"

# The project's venv when it has one; else the machine's python3 (the device image holds torch,
# transformers and the rest), with the repo on the path and any wheels carried in .whl/ (README of the
# device tool) installed beside it.
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/v2pe_site .whl/*.whl \
    && export PYTHONPATH=/tmp/v2pe_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
args=(--scale "$SCALE" --out "$WORK")
[ "${DRY_RUN:-0}" = 1 ] && args+=(--dry-run)

if [ -n "$STATE" ]; then
  "$PY" -m experiments.v2pe_delta unpack --from "$STATE" --out "$WORK" || exit 2
fi
# Keep 45 s for packing and copying: the tool's own limit kills everything at once.
left=$(( BUDGET_S - ($(date +%s) - start) - 45 ))
timeout --signal=TERM --kill-after=10 "$left" "$PY" -m experiments.v2pe_delta run "${args[@]}" 2>&1 | tee "$DEST/run.log"
rc=${PIPESTATUS[0]}
[ "$rc" = 124 ] && echo "[device] budget of ${BUDGET_S}s reached: packing what finished; rerun with STATE to go on" >&2
# The report covers the complete runs, also when the budget cut the run short.
"$PY" -m experiments.v2pe_delta run "${args[@]}" --until report --report-only >>"$DEST/run.log" 2>&1
"$PY" -m experiments.v2pe_delta pack --out "$WORK" --to "$DEST/v2pe_delta_${SCALE}_state.tar"
for f in REPORT.md results.json heatmaps.png lm_loss.png; do
  [ -f "$WORK/$f" ] && cp "$WORK/$f" "$DEST/$f"
done
echo "[device] done in $(( $(date +%s) - start ))s (run exit $rc); results in $DEST" >&2
exit "$rc"
