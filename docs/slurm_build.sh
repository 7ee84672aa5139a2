#!/bin/bash
# One v2pe dataset built by a Slurm array: every array task writes its share of the shard tasks into the
# same OUT on a shared filesystem, and a dependent job merges them into manifest.json (and the card).
# The result is byte for byte the build one machine would make with the same arguments and seed.
#
#   sbatch docs/slurm_build.sh            # the array; it submits the merge itself, see the end
#
# Each task reads SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT (and SLURM_ARRAY_TASK_MIN, so --array=1-16
# works as well as 0-15) as --shard-index / --num-shards, and writes the shard tasks i with
# i % num_shards == shard_index. Pass --num-shards/--shard-index yourself to run it without Slurm.
#
# A task that fails or is pre-empted can simply be resubmitted (sbatch --array=7 ...): finished shard
# tasks are skipped after their files are checked against their sha256, so reruns redo only the rest.
# `v2pe-data merge` refuses (one line, exit 1) while any shard task is missing and names them.
#
#SBATCH --job-name=v2pe-build
#SBATCH --array=0-15            # 16 array tasks; more tasks than shard tasks leaves some idle
#SBATCH --cpus-per-task=8       # used by --workers below
#SBATCH --mem=32G               # a 1M-token sample streams its images; 2-4 GB per worker is plenty
#SBATCH --time=04:00:00
#SBATCH --output=logs/v2pe-build-%A_%a.out

set -euo pipefail

OUT=${OUT:-/shared/datasets/long_vqa_256k}   # on a filesystem every node sees (flock must work on it)

# Every array task must pass the same build arguments: they are the build's identity (build.json), and a
# task whose arguments, tokenizer or package versions differ is refused rather than mixed in.
ARGS=(long_vqa --len 256k -n 20000 --seed 0 --shard-size 8
      --format wds,parquet --tokenizer /shared/models/InternVL2-2B --out "$OUT")

v2pe-data build "${ARGS[@]}" --workers "${SLURM_CPUS_PER_TASK:-1}" --quiet

# The last array task to start queues the merge after the whole array (afterok: only if every task
# succeeded). Submitting it once by hand works as well:
#   sbatch --dependency=afterok:<array job id> --wrap "v2pe-data merge $OUT"
if [[ "${SLURM_ARRAY_TASK_ID}" == "${SLURM_ARRAY_TASK_MAX:-${SLURM_ARRAY_TASK_ID}}" ]]; then
    sbatch --dependency="afterok:${SLURM_ARRAY_JOB_ID}" --job-name=v2pe-merge \
           --output="logs/v2pe-merge-%j.out" --wrap "v2pe-data merge '$OUT' && v2pe-data validate '$OUT' --no-images"
fi
