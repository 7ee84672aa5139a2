#!/usr/bin/env bash
# Wheels the lent GPU machine's image lacks, for `make gpu-check` to install there without a package index:
#   bash bench/gpu_wheels.sh        # here, once: fills .whl/ (git-ignored)
# then name `.whl` in the device tool's `carry`. The image has python3 3.12 with a CUDA torch, numpy, pillow,
# pyarrow, typer, safetensors, tensorboard, matplotlib, pyyaml, tqdm, pandas, xxhash and fsspec
# (../.library/device/KINDS.md); this adds what the project imports beyond them, at constraints.txt's versions:
# transformers and its tokenizers / hub, datasets (+ dill, multiprocess), webdataset, jsonschema and pydantic.
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
pin() { grep -i "^$1==" constraints.txt 2>/dev/null || echo "$1"; }
names=(transformers tokenizers huggingface_hub hf-xet datasets dill multiprocess webdataset braceexpand jsonschema
       jsonschema-specifications referencing rpds-py pydantic pydantic_core annotated-types typing-inspection)
specs=()
for n in "${names[@]}"; do specs+=("$(pin "$n")"); done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "${specs[@]}"
du -sh .whl
