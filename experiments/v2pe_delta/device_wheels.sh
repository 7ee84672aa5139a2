#!/usr/bin/env bash
# Wheels the device image lacks, for device.sh to install there (the lent machine cannot reach a package index):
#   bash experiments/v2pe_delta/device_wheels.sh          # here, once: fills .whl/ (git-ignored, ~26 MB)
# then name `.whl` in the device tool's `carry`. The same set `make gpu-check` uses (bench/gpu_wheels.sh):
# transformers/tokenizers at constraints.txt's versions, jsonschema (record validation), and the rest the
# image lacks; device.sh installs every wheel it finds there.
exec bash "$(dirname "$0")/../../bench/gpu_wheels.sh"
