"""Does V2PE work on our data? Small δ (v2pe_rnd) against δ = 1 (default) beyond the training length.

`python -m experiments.v2pe_delta --scale cpu` (or `make experiment-v2pe SCALE=cpu`) builds a Long-MR
retrieval set at a training length L and evaluation sets at L, 2L, 4L, 8L with needle depth on a grid,
trains the same small model once per position mode and seed (same data, order and initialisation), scores
every checkpoint on every length with `v2pe-train eval` at several strides, and writes a table and
length x depth heatmaps side by side. Every stage is resumable; see docs/experiments/v2pe_delta.md.

Modules: `config` (the typed scale recipe), `stages` (data, model, train, eval: the project's CLIs run as
subprocesses, with progress), `report` (results.json, REPORT.md, heatmaps.png, the control verdict).
"""
