#!/usr/bin/env bash
# make gpu-check: on a fresh H100/H200 machine, install from the package index, then bench/gpu_check.py.
# The whole check must end within 8 minutes; the install gets what it needs and the Python stages share the
# rest (each stage has its own timeout inside gpu_check.py). No flash-attn compile: torch's own kernels only.
#   OUT=<folder> bash bench/gpu_check.sh     # JSON to $OUT/gpu_check.json (else bench/gpu_check.json)
set -uo pipefail
cd "$(dirname "$0")/.."
TOTAL_S=${GPU_CHECK_TOTAL_S:-470}
INSTALL_S=${GPU_CHECK_INSTALL_S:-200}
PY=.venv/bin/python
start=$(date +%s)

# A venv that already imports a CUDA-capable torch is kept: re-installing would only spend the budget.
# A CPU venv (the CPU torch pin of `make install`) is left alone; the CUDA one goes beside it in .venv-gpu.
if [ -x "$PY" ] && "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  install='{"status": "kept", "venv": ".venv", "seconds": 0}'
else
  VENV=.venv
  [ -x "$PY" ] && VENV=.venv-gpu
  PY=$VENV/bin/python
  if timeout "$INSTALL_S" make install VENV="$VENV" TORCH_SPEC=torch EXTRAS=dev >/tmp/gpu_check_install.log 2>&1; then
    rc=0
  else
    rc=$?
  fi
  install="{\"status\": \"$([ $rc -eq 0 ] && echo ok || echo failed)\", \"venv\": \"$VENV\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - start ))}"
  if [ $rc -ne 0 ]; then
    echo "[gpu-check] install failed (rc $rc); last lines:" >&2
    tail -n 5 /tmp/gpu_check_install.log >&2
  fi
fi
echo "[gpu-check] install: $install"
# A failed install still runs the stages (on whatever torch is here) so the JSON says what happened.
[ -x "$PY" ] || PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
left=$(( TOTAL_S - ($(date +%s) - start) ))
exec "$PY" bench/gpu_check.py --budget-s "$left" --install "$install" "$@"
