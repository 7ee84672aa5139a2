"""The learning ladder: does the trainer learn retrieval, from trivially learnable to the δ experiment's task?

Rungs (`rungs/*.yaml`): a, retrieval in ~150-token text from scratch; b, inside a Long-MR record with a short
text haystack; c, with image tokens making up most of the context; d, the δ experiment's task at its
training length. Each is built by `v2pe-data build`, trained by `v2pe-train train` (from scratch, or from
the previous rung's exported model) and scored by `v2pe-train eval`. Rung a runs in `make test`
(tests/test_ladder.py): the guard that fails when the trainer stops learning. `ablate` runs a rung with
keys changed (ablations/*.yaml): the measurements of docs/experiments/learning.md.

Modules: `config` (RungConfig, the chain of rungs), `runner` (one rung's stages), `report` (tables).
"""
