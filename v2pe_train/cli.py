"""`v2pe-train`: train InternVL-style models on v2pe-data shards with V2PE positions; convert checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _config(recipe: Optional[Path], overrides: dict):
    from .config import ConfigError, TrainConfig

    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return TrainConfig.from_yaml(recipe, given) if recipe else TrainConfig.from_dict(given, where="options")
    except ConfigError as exc:
        _fail(str(exc))


@app.command()
def train(
    recipe: Optional[Path] = typer.Option(None, help="Training recipe YAML (recipes/train_32k.yaml, recipes/tiny.yaml)."),
    model: Optional[str] = typer.Option(None, help="'tiny' or a native InternVL checkpoint folder."),
    data: Optional[list[str]] = typer.Option(None, help="v2pe-data build folder(s) or tar files; repeatable."),
    out: Optional[str] = typer.Option(None, help="Run folder: checkpoints, TensorBoard logs, log.jsonl."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Total optimizer steps of the schedule."),
    stop_after: Optional[int] = typer.Option(None, "--stop-after", help="Stop at this step (schedule unchanged)."),
    cp: Optional[int] = typer.Option(None, help="Context-parallel degree; world size = dp x cp."),
    seed: Optional[int] = typer.Option(None),
    lr: Optional[float] = typer.Option(None),
    resume: bool = typer.Option(False, "--resume", help="Continue exactly from the latest checkpoint in --out."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad shard, image or record."),
    require_gpu: bool = typer.Option(False, "--require-gpu", help="Refuse to start without CUDA."),
    check_only: bool = typer.Option(False, "--check-only", help="Validate the recipe and inputs, then exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train (torchrun-compatible; a single process works without it)."""
    from .train import TrainError, preflight
    from .train import train as run

    cfg = _config(recipe, {"model": model, "data": list(data) if data else None, "out": out, "max_steps": max_steps,
                           "cp": cp, "seed": seed, "lr": lr, "strict": strict or None})
    try:
        preflight(cfg, require_gpu=require_gpu)
        if check_only:
            typer.echo("ok: recipe and inputs look ready")
            return
        result = run(cfg, resume=resume, max_steps=stop_after, progress=not quiet)
    except (TrainError, ValueError, RuntimeError) as exc:
        _fail(str(exc))
    if result.losses:
        typer.echo(f"step {result.step}: loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}; run in {result.run_dir}")


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
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    typer.echo(f"converted {src} -> {out}")
