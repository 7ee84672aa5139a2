"""Checkpoints that resume exactly: model (safetensors), optimizer, scheduler, RNG states, loader position.

Layout: RUN/checkpoints/step_00000010/{model.safetensors, optimizer.pt, scheduler.pt, rng_rank{r}.pt,
loader_rank{r}.json, meta.json} plus what `from_pretrained` needs beside the weights (config.json,
generation_config.json, the tokenizer files and chat_template.jinja; see export.py), so a step folder
also loads with `InternVLForConditionalGeneration.from_pretrained`. An FSDP run (`data_parallel: fsdp`)
writes model and optimizer as `dcp/` (torch.distributed.checkpoint, each rank its shards, loadable at another
world size) instead of optimizer.pt, and model.safetensors as the full model gathered once.
A checkpoint is written into a hidden temporary folder and renamed when every rank has finished, so a crash never leaves a half-written checkpoint under a final name; a write that
fails (a full disk) removes the temporary folder and leaves earlier checkpoints as they were.

Loading never runs code from a checkpoint: the .pt files are read with `torch.load(weights_only=True)`, which
rebuilds tensors and plain values only, and everything this module saves is made of those (numpy's RNG
state is stored as a tensor plus numbers, not as a pickled array). A file naming any other Python object is
refused before anything is restored.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException

from v2pe_common.tokenizer import load_tokenizer

from .config import TrainConfig, saved_settings
from .errors import V2PETrainError
from .model import resolve_tokenizer
from .model_files import run_max_tiles, save_model_config, save_processor, save_tokenizer

CKPT_DIR = "checkpoints"
DCP_DIR = "dcp"  # torch.distributed.checkpoint's folder of a sharded (FSDP) checkpoint
_STEP_NAME = re.compile(r"step_(\d{8,})")
# Below this many free bytes a failed write is reported as a full disk: torch's own message for a short
# write ("unexpected pos ...") does not say so.
_FULL_DISK_BYTES = 1 << 20


class CheckpointError(V2PETrainError, RuntimeError):
    """A checkpoint cannot be written or read; the message names the file and the cause."""

    reason = "checkpoint"


class RunMismatchError(CheckpointError):
    """The checkpoint belongs to a run with other settings: the command line must change, not the file."""

    reason = "run_mismatch"


def model_identity(model: nn.Module) -> str:
    """Hash of the architecture: parameter names and shapes. Two checkpoints of one model agree."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
    return digest.hexdigest()[:16]


def write_text_atomic(path: Path, text: str) -> None:
    """Write-then-rename, so a kill never leaves a half-written file under `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),  # a tuple of ints: loadable with weights_only
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_dir(run: Path, step: int) -> Path:
    return Path(run) / CKPT_DIR / f"step_{step:08d}"


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every finished checkpoint, by step number (never by name)."""
    found = []
    for path in (Path(run) / CKPT_DIR).glob("step_*"):
        m = _STEP_NAME.fullmatch(path.name)
        if m and path.is_dir():
            found.append((int(m.group(1)), path))
    return sorted(found)


def _run_id(path: Path) -> str | None:
    try:
        return json.loads((path / "meta.json").read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def _prune(run: Path, keep_last: int, written: Path, run_id: str | None) -> None:
    """Remove this run's older checkpoints beyond the newest `keep_last`; never `written`, never another run's."""
    ours = [p for _, p in checkpoints(run) if run_id is None or _run_id(p) == run_id]
    for old in ours[:-keep_last]:
        if old != written:
            shutil.rmtree(old, ignore_errors=True)


def _write_failure(final: Path, name: str, exc: BaseException) -> CheckpointError:
    if isinstance(exc, OSError) and exc.errno:
        cause = os.strerror(exc.errno)
    else:
        cause = " ".join(str(exc).split()) or exc.__class__.__name__
        try:
            if shutil.disk_usage(final.parent).free < _FULL_DISK_BYTES:
                cause = f"No space left on device ({cause})"
        except OSError:
            pass
    return CheckpointError(f"checkpoint {final}: cannot write {name}: {cause}; earlier checkpoints are kept")


def _save_pt(obj, path: Path) -> None:
    # Through a Python file object, so a failed write surfaces as the OSError (ENOSPC, EIO) that caused it.
    with open(path, "wb") as fh:
        torch.save(obj, fh)


def _dcp_state(model: nn.Module, optimizer) -> dict:
    """Model and optimizer state keyed by parameter name, each rank holding its shards (DTensors under FSDP)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optim_state}


def _save_full_weights(model: nn.Module, path: Path, rank: int) -> None:
    """Gather the whole model once (a collective: every rank calls it) and write it from rank 0 as safetensors."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt"})


def save_checkpoint(run: Path, step: int, *, model: nn.Module, optimizer, scheduler, loader_state: dict,
                    rank: int = 0, world: int = 1, barrier=lambda: None, extra: dict | None = None,
                    keep_last: int = 2, run_id: str | None = None, tokenizer=None, sharded: bool = False) -> Path:
    """Write step `step`; keep this run's newest `keep_last` checkpoints (by step). Raises CheckpointError.

    `tokenizer` (a TextTokenizer) is saved beside the weights; without it, the one `extra["config"]` names
    (the run's TrainConfig) is used, and with neither the folder gets no tokenizer files.

    `sharded` (an FSDP run; every rank calls this) writes model and optimizer through torch.distributed.checkpoint
    into `dcp/`, each rank its own shards, so they load at another world size; `model.safetensors` is then
    the full model gathered once, for from_pretrained and export.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_model
    from transformers import PreTrainedModel

    config = saved_settings((extra or {}).get("config") or {})

    final = step_dir(run, step)
    tmp = final.with_name(f".{final.name}.tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
        except OSError as exc:
            raise _write_failure(final, tmp.name, exc) from exc
    barrier()
    name = ""
    try:
        if sharded:
            name = DCP_DIR
            dcp.save(_dcp_state(model, optimizer), checkpoint_id=str(tmp / name))
            name = "model.safetensors"
            _save_full_weights(model, tmp / name, rank)
        if rank == 0:
            name = "model.safetensors"
            # The in-memory names (not save_pretrained's reverted ones): from_pretrained accepts both, and
            # load_checkpoint and eval's load_generator read these with safetensors' strict load_model.
            if not sharded:
                save_model(model, str(tmp / name))
            if isinstance(model, PreTrainedModel):  # any other module has no config to write
                name = "config.json"
                save_model_config(model, tmp)
                name = "tokenizer files"
                if tokenizer is None and "model" in config:
                    tokenizer = _run_tokenizer(config)
                if tokenizer is not None:
                    save_tokenizer(tokenizer, tmp, config.get("template"))
                name = "processor configs"
                save_processor(tmp, run_max_tiles(config))
            if not sharded:
                name = "optimizer.pt"
                _save_pt(optimizer.state_dict(), tmp / name)
            name = "scheduler.pt"
            _save_pt(scheduler.state_dict(), tmp / name)
            name = "meta.json"
            meta = {"step": step, "world": world, "model_identity": model_identity(model), "run_id": run_id,
                    "format": DCP_DIR if sharded else "replicated", **(extra or {})}
            (tmp / name).write_text(json.dumps(meta, indent=1, sort_keys=True))
        name = f"rng_rank{rank}.pt"
        _save_pt(_rng_state(), tmp / name)
        name = f"loader_rank{rank}.json"
        (tmp / name).write_text(json.dumps(loader_state, sort_keys=True))
    except (OSError, RuntimeError, ValueError, SafetensorError, CheckpointException) as exc:
        error = _write_failure(final, name, exc)
        shutil.rmtree(tmp, ignore_errors=True)
        raise error from exc
    barrier()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        _prune(run, keep_last, final, run_id)
    barrier()
    return final


def _run_tokenizer(config: dict):
    """The tokenizer a run trains with, from its saved TrainConfig (load_tokenizer caches: the trainer's own)."""
    return load_tokenizer(resolve_tokenizer(TrainConfig(model=str(config["model"]), tokenizer=config.get("tokenizer"))))


def latest_checkpoint(run: Path) -> Path | None:
    found = checkpoints(run)
    return found[-1][1] if found else None


def _load_pt(path: Path):
    """The object in a .pt file, built from tensors and plain values only; anything else is refused unrun."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (an incomplete or foreign checkpoint)")
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text:  # torch's long advice to retry with weights_only=False stays out
            named = re.search(r"GLOBAL ([\w.]+)", text)
            what = f"the Python object {named.group(1)}" if named else "Python objects beyond tensors and plain values"
            raise CheckpointError(
                f"{path}: refusing to load: it asks to rebuild {what}; v2pe checkpoints hold only tensors and "
                "plain values (this file was written by other code or altered)") from None
        raise CheckpointError(f"{path}: unreadable: {' '.join(text.split())}") from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable: {' '.join(str(exc).split()) or exc.__class__.__name__}") from None


def read_json(path: Path):
    """A checkpoint's JSON file; CheckpointError when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (an incomplete or foreign checkpoint)") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable: {exc}") from None


def load_checkpoint(path: Path, *, model: nn.Module, optimizer, scheduler, rank: int = 0, world: int = 1,
                    config=None) -> tuple[int, dict | None]:
    """Restore everything in place; return (step, loader state).

    Refuses a checkpoint of another model, another world size, or (with `config`, a TrainConfig) a run whose
    identity keys differ, naming each; every file is read and checked before anything is restored.

    A sharded (DCP) checkpoint loads at any world size (every rank calls this): model, optimizer, scheduler
    and step are restored, resharded to this run's layout. At another world size the per-rank loader and RNG
    states do not apply (each rank's data split changed), so the loader state returned is None and the RNG
    states stay as seeded; at the same world size the resume is exact, as for replicated checkpoints.
    """
    path = Path(path)
    if not (path / "meta.json").is_file():
        raise CheckpointError(f"{path}: not a v2pe checkpoint (no meta.json)")
    meta = read_json(path / "meta.json")
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise CheckpointError(f"{path / 'meta.json'}: not a v2pe checkpoint meta (no integer 'step')")
    ident = model_identity(model)
    if meta.get("model_identity") != ident:
        raise CheckpointError(
            f"{path}: saved from another model (architecture {meta.get('model_identity')}, this model {ident}); "
            "refusing to load — check --model and the run folder"
        )
    sharded = meta.get("format") == DCP_DIR
    if sharded and meta.get("world") != world:
        return _load_resharded(path, meta, model=model, optimizer=optimizer, scheduler=scheduler, config=config)
    if meta.get("world") != world:
        raise CheckpointError(f"{path}: saved with {meta.get('world')} processes, resuming with {world}; "
                              "exact resume needs the same world size")
    _check_identity(path, meta, config)
    if sharded:
        scheduler_state = _load_pt(path / "scheduler.pt")
        rng_file = path / f"rng_rank{rank}.pt"
        rng_state = _load_pt(rng_file)
        loader_state = read_json(path / f"loader_rank{rank}.json")
        _load_dcp(path, model, optimizer)
        for file, apply, state in ((path / "scheduler.pt", scheduler.load_state_dict, scheduler_state),
                                   (rng_file, _set_rng_state, rng_state)):
            _apply(file, apply, state)
        return int(meta["step"]), loader_state
    optimizer_state = _load_pt(path / "optimizer.pt")
    scheduler_state = _load_pt(path / "scheduler.pt")
    rng_file = path / f"rng_rank{rank}.pt"
    rng_state = _load_pt(rng_file)
    loader_state = read_json(path / f"loader_rank{rank}.json")
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    try:
        load_model(model, str(path / "model.safetensors"), strict=True)
    except (OSError, RuntimeError, SafetensorError) as exc:
        raise CheckpointError(f"{path / 'model.safetensors'}: unreadable: {' '.join(str(exc).split())}") from None
    for file, apply, state in ((path / "optimizer.pt", optimizer.load_state_dict, optimizer_state),
                               (path / "scheduler.pt", scheduler.load_state_dict, scheduler_state),
                               (rng_file, _set_rng_state, rng_state)):
        _apply(file, apply, state)
    return int(meta["step"]), loader_state


def _apply(file: Path, apply, state) -> None:
    try:
        apply(state)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise CheckpointError(f"{file}: does not fit this run: {exc.__class__.__name__}: {exc}") from None


def _check_identity(path: Path, meta: dict, config) -> None:
    if config is not None:
        changes = config.identity_changes(meta.get("config") or {}, resuming=True)
        if changes:
            raise RunMismatchError(
                f"{path}: belongs to a run with other settings ({'; '.join(changes)}); resume with the saved "
                "values, or start a new run in another --out")


def _load_dcp(path: Path, model: nn.Module, optimizer) -> None:
    """Read `dcp/` into this run's layout (each rank its own shards) and install it in model and optimizer."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    if not (path / DCP_DIR / ".metadata").is_file():
        raise CheckpointError(f"{path / DCP_DIR}: missing or incomplete (no .metadata): not a finished sharded checkpoint")
    state = _dcp_state(model, optimizer)
    try:
        dcp.load(state, checkpoint_id=str(path / DCP_DIR))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    except (CheckpointException, KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path / DCP_DIR}: does not fit this run: {' '.join(str(exc).split())[:500]}") from None


def _load_resharded(path: Path, meta: dict, *, model: nn.Module, optimizer, scheduler, config) -> tuple[int, None]:
    _check_identity(path, meta, config)
    scheduler_state = _load_pt(path / "scheduler.pt")
    _load_dcp(path, model, optimizer)
    _apply(path / "scheduler.pt", scheduler.load_state_dict, scheduler_state)
    return int(meta["step"]), None
