#!/usr/bin/env bash
# make gpu-check: on an H100/H200 machine, install, then bench/gpu_check.py, all inside ONE budget of seconds:
#   GPU_BUDGET_S=480 OUT=<folder> bash bench/gpu_check.sh [gpu_check.py flags: --resume PATH, --fresh, ...]
# The install's time comes out of that budget (it may take at most half of it, and GPU_CHECK_INSTALL_S), and the
# Python stages share the rest by value (each with its own timeout inside gpu_check.py). No flash-attn compile:
# torch's own kernels only. The report goes to $OUT/gpu_check.json (else bench/gpu_check.json); copied back to
# bench/gpu_check.json, the next loan resumes from it and runs only the stages not yet ok. The lent machine reaches
# no package index: run `bash bench/gpu_wheels.sh` here first and carry `.whl`; with it, the install is a venv
# over the machine's own CUDA torch plus those wheels (else `make install` from the index).
set -uo pipefail
cd "$(dirname "$0")/.."
TOTAL_S=${GPU_BUDGET_S:-${GPU_CHECK_TOTAL_S:-470}}
INSTALL_S=${GPU_CHECK_INSTALL_S:-200}
(( INSTALL_S > TOTAL_S / 2 )) && INSTALL_S=$(( TOTAL_S / 2 ))
PY=.venv/bin/python
start=$(date +%s)

# Nothing left to run (every stage ok in the report resumed from): spend no budget on an install.
# gpu_check.py --pending needs only the standard library, so any python3 answers it.
pending=$(python3 bench/gpu_check.py --pending "$@" 2>/dev/null) || pending="?"
if [ -z "$pending" ]; then
  install='{"status": "skipped", "reason": "every stage already ok in the resumed report", "seconds": 0}'
  [ -x "$PY" ] || PY=python3
# A venv that already imports a CUDA-capable torch is kept: re-installing would only spend the budget.
# A CPU venv (the CPU torch pin of `make install`) is left alone; the CUDA one goes beside it in .venv-gpu.
elif [ -x "$PY" ] && "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  install='{"status": "kept", "venv": ".venv", "seconds": 0}'
else
  VENV=.venv
  [ -x "$PY" ] && VENV=.venv-gpu
  PY=$VENV/bin/python
  if [ -d .whl ] && python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    # The lent machine: no package index, a CUDA torch in its python3. A venv over that python (its packages
    # seen) gets the carried wheels (bench/gpu_wheels.sh) and this package; nothing is fetched.
    VENV=.venv-gpu
    PY=$VENV/bin/python
    how="wheels"
    cmd="python3 -m venv --system-site-packages $VENV && $PY -m pip install --quiet --no-index --no-deps .whl/*.whl"
    cmd="$cmd && $PY -m pip install --quiet --no-index --no-deps --no-build-isolation -e ."
  else
    how="index"
    cmd="make install VENV=$VENV TORCH_SPEC=torch EXTRAS=dev"
  fi
  if timeout "$INSTALL_S" bash -c "$cmd" >/tmp/gpu_check_install.log 2>&1; then
    rc=0
  else
    rc=$?
  fi
  status=$([ $rc -eq 0 ] && echo ok || echo failed)
  install="{\"status\": \"$status\", \"from\": \"$how\", \"venv\": \"$VENV\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - start ))}"
  if [ $rc -ne 0 ]; then
    echo "[gpu-check] install failed (rc $rc); last lines:" >&2
    tail -n 5 /tmp/gpu_check_install.log >&2
  fi
fi
echo "[gpu-check] install: $install (stages to run: ${pending:-none})"
# A failed install still runs the stages (on whatever torch is here) so the JSON says what happened.
[ -x "$PY" ] || PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
left=$(( TOTAL_S - ($(date +%s) - start) ))
exec "$PY" bench/gpu_check.py --budget-s "$left" --install "$install" "$@"
