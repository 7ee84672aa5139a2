"""Checks before a run starts, each failing at once with what is missing (UsageError): the inputs
(`preflight`, before any process group or model exists) and the run folder (`check_run_dir`).

A run folder holds one run. `RUN/run.json` records its identity (the config less `RESUMABLE_KEYS`); a new
run into a folder holding run files is refused unless `overwrite` (which deletes the earlier run's files,
`RUN_FILES`, and nothing else).
"""

from __future__ import annotations

import glob
import json
from importlib.util import find_spec
from pathlib import Path

import torch

from v2pe_common.buildfolder import MANIFEST_FILE
from v2pe_common.tokenizer import is_hub_id, load_tokenizer, resolve_hub_id

from . import checkpoint as ckpt
from .config import TrainConfig
from .errors import UsageError
from .model import PRESETS, resolve_tokenizer

RUN_FILE = "run.json"
# Everything a run writes into its folder: what --overwrite removes, and what marks a folder as taken.
RUN_FILES = (RUN_FILE, "config.json", "log.jsonl", "data_errors.json", "tb", ckpt.CKPT_DIR)


def eval_benchmarks(data: str) -> str:
    """The evaluation benchmarks and their datasets a build's manifest declares (its sources' `eval_benchmark`),
    as one phrase ("MileBench (MileBench/ALFRED, ...)"), or "" for none. A build's copies and their files
    (OUT/internvl/annotations/*.jsonl: three levels down) are looked up through the build folder above them;
    data with no manifest above it is checked record by record by the loader (`allow_eval_data`)."""
    path = Path(data)
    for folder in (path, *path.parents[:3]):
        manifest = folder / MANIFEST_FILE
        if manifest.is_file():
            try:
                sources = json.loads(manifest.read_text()).get("sources") or []
            except (OSError, ValueError):
                return ""  # the loader reports an unreadable manifest
            marked = {}
            for s in sources:
                if isinstance(s, dict) and s.get("eval_benchmark"):
                    marked.setdefault(s["eval_benchmark"], []).append(str(s.get("dataset", s.get("name", "?"))))
            return "; ".join(f"{b} ({', '.join(names)})" for b, names in marked.items())
    return ""


def preflight(cfg: TrainConfig, *, require_gpu: bool = False) -> None:
    """Fail at once, with what is missing, before any process group or model exists (raises UsageError)."""
    if require_gpu and not torch.cuda.is_available():
        raise UsageError("this recipe needs a CUDA GPU and none is visible; on a CPU machine run `make train-tiny`")
    model_dir = cfg.model.name
    if is_hub_id(cfg.model.name):  # its configs only, at once; the weights come when the model is built
        try:
            model_dir = resolve_hub_id(cfg.model.name, ("*.json",), "model")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if cfg.model.name not in PRESETS and not (Path(model_dir) / "config.json").is_file():
        raise UsageError(f"model.name: no checkpoint at {cfg.model.name!r} (expected a native InternVL folder with "
                         "config.json; convert remote-code checkpoints with `v2pe-train convert`, or run `make train-tiny`)")
    if cfg.parallel.cp > 1 and cfg.data.max_seq_len < 2 * cfg.parallel.cp:
        raise UsageError(f"parallel.cp: {cfg.parallel.cp} ranks need sequences of at least {2 * cfg.parallel.cp} "
                         f"tokens (2 zigzag chunks a rank); data.max_seq_len is {cfg.data.max_seq_len}")
    if cfg.parallel.ring_backend == "flash":
        if not torch.cuda.is_available() or find_spec("flash_attn") is None or find_spec("ring_flash_attn") is None:
            raise UsageError("parallel.ring_backend: 'flash' needs CUDA plus flash-attn and ring-flash-attn "
                             "(pip install -e '.[gpu]'); use 'auto' or 'torch' on this machine")
    if not cfg.data.paths and not cfg.data.datasets:
        raise UsageError("data.paths: no data given (pass v2pe-data build folders with --data / DATA=...)")
    for d in cfg.data.paths + [spec["path"] for spec in cfg.data.datasets or []]:
        if not Path(d).exists() and not glob.glob(d):
            raise UsageError(f"data.paths: {d!r} does not exist (build it with `v2pe-data build`, or run `make train-tiny`)")
    if not cfg.data.allow_eval_data:
        for d in cfg.data.paths + [spec["path"] for spec in cfg.data.datasets or []]:
            found = eval_benchmarks(d)
            if found:
                raise UsageError(f"data: {d!r} holds records built from the evaluation benchmark {found}: training on "
                                 "them contaminates that benchmark's scores (V2PE trained on the tasks' training "
                                 "splits, not on the benchmark); set data.allow_eval_data: true in the recipe to train "
                                 "on it anyway")
    try:
        load_tokenizer(resolve_tokenizer(cfg))  # cached: the Trainer gets this same object
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def check_run_dir(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse (UsageError) a new run into a folder holding run files, unless `overwrite`; reads only."""
    if resume and overwrite:
        raise UsageError("--resume continues the run in --out and --overwrite deletes it: give one of them")
    out = Path(cfg.out)
    found = [name for name in RUN_FILES if (out / name).exists()]
    if resume or overwrite or not found:
        return
    latest = ckpt.latest_checkpoint(out)
    where = f"{out} holds a run (latest checkpoint {latest.name})" if latest else f"{out} holds a run"
    try:
        saved = json.loads((out / RUN_FILE).read_text()).get("identity")
    except (OSError, ValueError, AttributeError):
        saved = None
    changes = cfg.identity_changes(saved) if isinstance(saved, dict) else None
    if changes == []:
        raise UsageError(f"{where} of this config; pass --resume to continue it, or --overwrite to delete it "
                         "and start again")
    what = "; ".join(changes) if changes else f"run files {found}, no readable {RUN_FILE}"
    raise UsageError(f"{where} with other settings ({what}); choose a new --out, or pass --overwrite to delete "
                     "that run and start afresh")
