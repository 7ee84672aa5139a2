#!/usr/bin/env bash
# Wheels the device image lacks, for device.sh to install there (the lent machine cannot reach a package index):
#   bash experiments/v2pe_delta/device_wheels.sh          # here, once: fills .whl/ (git-ignored, ~20 MB)
# then name `.whl` in the device tool's `carry`. The image holds torch, numpy, pillow, pyarrow, typer,
# tokenizers, safetensors, tensorboard, matplotlib and pyyaml (the device tool's KINDS.md); this adds
# jsonschema (record validation) and the transformers/tokenizers versions of constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
pin() { grep -i "^$1==" constraints.txt 2>/dev/null || echo "$1"; }
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "$(pin transformers)" "$(pin tokenizers)" "$(pin jsonschema)" "$(pin jsonschema-specifications)" \
  "$(pin referencing)" "$(pin rpds-py)"
du -sh .whl
