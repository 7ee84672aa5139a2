"""`v2pe-train`: train InternVL-style models on v2pe-data shards with V2PE positions; convert checkpoints.

Exit status: 0 done; 2 a usage error (bad recipe key or value, bad flag, missing data or model, a run
folder holding another run, a checkpoint of other settings); 1 a runtime failure (disk full, non-finite
loss, corrupt or unsafe checkpoint, a bad shard under --strict). Either way one `error: ...` line on stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


USAGE, FAILURE = 2, 1


def _fail(message: str, code: int = USAGE) -> None:
    typer.echo("error: " + " ".join(message.split()), err=True)
    raise typer.Exit(code=code)


def _config(recipe: Optional[Path], overrides: dict):
    from .config import ConfigError, TrainConfig

    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return TrainConfig.from_yaml(recipe, given) if recipe else TrainConfig.from_dict(given, where="command line")
    except ConfigError as exc:
        _fail(str(exc))


@app.command()
def train(
    recipe: Optional[Path] = typer.Option(None, help="Training recipe YAML (recipes/train_32k.yaml, recipes/tiny.yaml)."),
    model: Optional[str] = typer.Option(None, help="'tiny' or a native InternVL checkpoint folder."),
    data: Optional[list[str]] = typer.Option(None, help="v2pe-data build folder(s) or tar files; repeatable."),
    out: Optional[str] = typer.Option(None, help="Run folder: checkpoints, TensorBoard logs, log.jsonl."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Total optimizer steps of the schedule."),
    stop_after: Optional[int] = typer.Option(None, "--stop-after", min=0,
                                             help="Stop at this step (schedule unchanged); 0 trains nothing."),
    cp: Optional[int] = typer.Option(None, help="Context-parallel degree; world size = dp x cp."),
    seed: Optional[int] = typer.Option(None),
    lr: Optional[float] = typer.Option(None),
    resume: bool = typer.Option(False, "--resume", help="Continue exactly from the latest checkpoint in --out."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Delete the run already in --out (checkpoints, logs, tb) and start afresh."),
    no_verify_shards: bool = typer.Option(False, "--no-verify-shards",
                                          help="Do not check shard sha256 against the manifest; "
                                               "for shards edited on purpose."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad shard, image or record."),
    require_gpu: bool = typer.Option(False, "--require-gpu", help="Refuse to start without CUDA."),
    check_only: bool = typer.Option(False, "--check-only", help="Validate the recipe and inputs, then exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train (torchrun-compatible; a single process works without it)."""
    from .checkpoint import RunMismatchError
    from .train import UsageError, check_run_dir, preflight
    from .train import train as run

    cfg = _config(recipe, {"model": model, "data": list(data) if data else None, "out": out, "max_steps": max_steps,
                           "cp": cp, "seed": seed, "lr": lr, "strict": strict or None,
                           "verify_shards": False if no_verify_shards else None})
    try:
        preflight(cfg, require_gpu=require_gpu)
        if check_only:
            check_run_dir(cfg, resume=resume, overwrite=overwrite)
            typer.echo("ok: recipe and inputs look ready")
            return
        result = run(cfg, resume=resume, overwrite=overwrite, max_steps=stop_after, progress=not quiet)
    except (UsageError, RunMismatchError) as exc:
        _fail(str(exc), USAGE)
    except (RuntimeError, ValueError, OSError) as exc:  # TrainError, CheckpointError, LoaderError, torch, I/O
        _fail(str(exc), FAILURE)
    if result.losses:
        typer.echo(f"step {result.step}: loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}; run in {result.run_dir}")
    else:
        stop = cfg.max_steps if stop_after is None else min(stop_after, cfg.max_steps)
        typer.echo(f"step {result.step}: nothing to train (stop at step {stop}); run in {result.run_dir}")


@app.command()
def convert(src: Path = typer.Argument(..., help="Remote-code InternVL2 checkpoint folder (InternVLChatModel)."),
            dst: Path = typer.Argument(..., help="Output folder for the native transformers layout."),
            tokenizer: Optional[Path] = typer.Option(None, help="Tokenizer folder (default: the one inside SRC)."),
            dtype: Optional[str] = typer.Option(None, help="Cast weights: bf16, fp16 or fp32 (default: as stored).")) -> None:
    """Convert a remote-code InternVL2 checkpoint (InternViT + mlp1 + InternLM2) to transformers' native InternVL."""
    import torch

    from .convert import convert as run

    dtypes = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if dtype not in dtypes:
        _fail(f"--dtype: choose bf16, fp16 or fp32, got {dtype!r}")
    try:
        out = run(src, dst, tokenizer=tokenizer, dtype=dtypes[dtype])
    except ValueError as exc:
        _fail(str(exc), USAGE)
    except OSError as exc:
        _fail(str(exc), FAILURE)
    typer.echo(f"converted {src} -> {out}")
