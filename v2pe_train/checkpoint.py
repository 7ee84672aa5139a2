"""Checkpoints that resume exactly: model (safetensors), optimizer, scheduler, RNG states, loader position.

Layout: RUN/checkpoints/step_00000010/{model.safetensors, optimizer.pt, scheduler.pt, rng_rank{r}.pt,
loader_rank{r}.json, meta.json}. A checkpoint is written into a hidden temporary folder and renamed when
every rank has finished, so a crash never leaves a half-written checkpoint under a final name.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

CKPT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
    pass


def model_identity(model: nn.Module) -> str:
    """Hash of the architecture: parameter names and shapes. Two checkpoints of one model agree."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
    return digest.hexdigest()[:16]


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_dir(run: Path, step: int) -> Path:
    return Path(run) / CKPT_DIR / f"step_{step:08d}"


def save_checkpoint(run: Path, step: int, *, model: nn.Module, optimizer, scheduler, loader_state: dict,
                    rank: int = 0, world: int = 1, barrier=lambda: None, extra: dict | None = None,
                    keep_last: int = 2) -> Path:
    final = step_dir(run, step)
    tmp = final.with_name(f".{final.name}.tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    if rank == 0:
        from safetensors.torch import save_model

        save_model(model, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        meta = {"step": step, "world": world, "model_identity": model_identity(model), **(extra or {})}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    torch.save(_rng_state(), tmp / f"rng_rank{rank}.pt")
    (tmp / f"loader_rank{rank}.json").write_text(json.dumps(loader_state, sort_keys=True))
    barrier()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(final.parent.glob("step_*"))[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def latest_checkpoint(run: Path) -> Path | None:
    found = sorted((Path(run) / CKPT_DIR).glob("step_*"))
    return found[-1] if found else None


def load_checkpoint(path: Path, *, model: nn.Module, optimizer, scheduler, rank: int = 0, world: int = 1) -> tuple[int, dict]:
    """Restore everything in place; return (step, loader state). Refuses a checkpoint of another model."""
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise CheckpointError(f"{path}: not a v2pe checkpoint (no meta.json)")
    meta = json.loads(meta_file.read_text())
    ident = model_identity(model)
    if meta.get("model_identity") != ident:
        raise CheckpointError(
            f"{path}: saved from another model (architecture {meta.get('model_identity')}, this model {ident}); "
            "refusing to load — check --model and the run folder"
        )
    if meta.get("world") != world:
        raise CheckpointError(f"{path}: saved with {meta.get('world')} processes, resuming with {world}; "
                              "exact resume needs the same world size")
    from safetensors.torch import load_model

    load_model(model, str(path / "model.safetensors"), strict=True)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    _set_rng_state(torch.load(path / f"rng_rank{rank}.pt", weights_only=False))
    loader_state = json.loads((path / f"loader_rank{rank}.json").read_text())
    return int(meta["step"]), loader_state
