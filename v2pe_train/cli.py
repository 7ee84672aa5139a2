"""`v2pe-train`: train InternVL-style models on v2pe-data shards with V2PE positions; convert checkpoints.

Exit status: 0 done; 2 a usage error (bad recipe key or value, bad flag, missing data or model, a run
folder holding another run, a checkpoint of other settings); 1 a runtime failure (disk full, non-finite
loss, corrupt or unsafe checkpoint, a bad shard under --strict). Either way one `error: ...` line on stderr;
anything else (CUDA out of memory, a broken NCCL/gloo collective, a bug) exits 1 with its traceback.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import typer

from v2pe_common.cli_logging import FAILURE, USAGE, fail, make_app

from .errors import UsageError, V2PETrainError

app = make_app("v2pe-train", __doc__)


def _config(recipe: Optional[Path], overrides: dict, settings: Optional[list[str]] = None):
    """The recipe, then KEY=VALUE settings, then the named flags, each over the one before."""
    from v2pe_common.recipe import parse_settings, read_recipe

    from .config import ConfigError, TrainConfig

    try:
        raw = read_recipe(recipe) if recipe else {}
        # KEY=null sets a key to null, as in the recipe; a flag left out changes nothing
        return TrainConfig.from_dict(raw, str(recipe) if recipe else "command line", parse_settings(settings or []),
                                     {k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        fail(str(exc))


@contextlib.contextmanager
def _one_line(*usage: type[BaseException]):
    """One `error:` line for a failure the user can act on: `usage` ones exit 2; the package's own
    (V2PETrainError) and the OS's about the user's files (a full disk, a folder not readable) exit 1.
    Anything else (CUDA out of memory, a broken NCCL/gloo collective, a bug's RuntimeError) keeps its
    traceback, which is what the user and a bug report need."""
    try:
        yield
    except typer.Exit:  # click's Exit is a RuntimeError: a command's own exit passes as it is
        raise
    except usage as exc:
        fail(str(exc), USAGE)
    except (V2PETrainError, OSError) as exc:
        fail(str(exc), FAILURE)


_SETTINGS_HELP = ("Recipe keys to override, as SECTION.KEY=VALUE (YAML values: optim.lr=1e-3 data.max_seq_len=64k "
                  "data.paths='[out/a, out/b]' sample.train_on_eos=false); every key of the recipe can be set; "
                  "`v2pe-train config show` lists them.")


@app.command()
def train(
    settings: Optional[list[str]] = typer.Argument(None, help=_SETTINGS_HELP, show_default=False),
    recipe: Optional[Path] = typer.Option(None, help="Training recipe YAML (recipes/train_32k.yaml, recipes/tiny.yaml)."),
    model: Optional[str] = typer.Option(None, help="'tiny', a native InternVL checkpoint folder, or a Hub id org/name."),
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
    from .preflight import check_run_dir, preflight
    from .train import train as run

    cfg = _config(recipe, {"model.name": model, "data.paths": list(data) if data else None, "out": out,
                           "optim.max_steps": max_steps, "parallel.cp": cp, "seed": seed, "optim.lr": lr,
                           "data.strict": strict or None, "data.verify_shards": False if no_verify_shards else None},
                  settings)
    with _one_line(UsageError, RunMismatchError):
        preflight(cfg, require_gpu=require_gpu)
        if check_only:
            check_run_dir(cfg, resume=resume, overwrite=overwrite)
            typer.echo("ok: recipe and inputs look ready")
            return
        result = run(cfg, resume=resume, overwrite=overwrite, max_steps=stop_after, progress=not quiet)
    if result.losses:
        typer.echo(f"step {result.step}: loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}; run in {result.run_dir}")
    else:
        stop = cfg.optim.max_steps if stop_after is None else min(stop_after, cfg.optim.max_steps)
        typer.echo(f"step {result.step}: nothing to train (stop at step {stop}); run in {result.run_dir}")


config_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="The training recipe's keys: type, default, meaning.")
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    args: Optional[list[str]] = typer.Argument(None, show_default=False,
                                               help="[RECIPE] [KEY=VALUE ...]: a recipe YAML and/or overrides."),
) -> None:
    """Every key of a training recipe with its type, value, default and meaning (values: the recipe's, with
    KEY=VALUE on top; without a recipe, the defaults)."""
    from .config import describe

    recipes = [a for a in args or [] if "=" not in a]
    if len(recipes) > 1:
        fail(f"give one recipe, got {recipes}")
    cfg = _config(Path(recipes[0]) if recipes else None, {}, [a for a in args or [] if "=" in a])
    rows = describe(cfg)
    width = max(len(f"{r['key']}: {r['type']}") for r in rows)
    for r in rows:
        value = f"{r['value']!r}" + ("" if r["value"] == r["default"] else f" (default {r['default']!r})")
        typer.echo(f"{(r['key'] + ': ' + r['type']).ljust(width)}  {value}\n{' ' * width}  {r['help']}")


@config_app.command("migrate")
def config_migrate(
    recipe: Path = typer.Argument(..., help="A training recipe written with flat keys (lr: ..., cp: ...)."),
    write: bool = typer.Option(False, "--write", help="Rewrite the file in place; default: print the result."),
) -> None:
    """Rewrite a flat recipe into sections (optim.lr, parallel.cp, ...), comments kept beside their keys."""
    from .config import ConfigError, migrate

    try:
        text = migrate(recipe.read_text())
    except OSError as exc:
        fail(f"{recipe}: cannot read recipe: {exc.strerror}")
    except ConfigError as exc:
        fail(f"{recipe}: {exc}")
    if write:
        recipe.write_text(text)
        typer.echo(f"{recipe}: migrated")
    else:
        typer.echo(text, nl=False)


@app.command()
def inspect(
    settings: Optional[list[str]] = typer.Argument(None, help=_SETTINGS_HELP, show_default=False),
    recipe: Optional[Path] = typer.Option(None, help="Training recipe YAML: the batches its run would read."),
    data: Optional[list[str]] = typer.Option(None, help="v2pe-data build folder(s) or tar files; repeatable."),
    batches: int = typer.Option(1, min=1, help="How many packed batches to show."),
    rows: Optional[int] = typer.Option(400, min=1, help="Rows shown per batch (an image-context run is one row)."),
) -> None:
    """Print the first packed batches a run reads, token by token: position, token, and which are targets."""
    import torch

    from v2pe_common.tokenizer import load_tokenizer

    from .data import TrainDataLoader
    from .inspect_batch import describe_batch
    from .model import resolve_tokenizer
    from .parallel.mesh import Topology
    from .train import loader_config

    cfg = _config(recipe, {"data.paths": list(data) if data else None}, settings)
    if not cfg.data.paths and not cfg.data.datasets:
        fail("data: no data given (pass a recipe or --data)")
    with _one_line(UsageError, ValueError):
        tok = load_tokenizer(resolve_tokenizer(cfg))
        loader = TrainDataLoader(loader_config(cfg, Topology(rank=0, world=1, cp=1), torch.device("cpu")), tok)
        it = iter(loader)
        for n in range(batches):
            typer.echo(f"== batch {n}")
            typer.echo("\n".join(describe_batch(next(it), tok, max_rows=rows)))


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
        fail(f"--dtype: choose bf16, fp16 or fp32, got {dtype!r}")
    try:
        out = run(src, dst, tokenizer=tokenizer, dtype=dtypes[dtype])
    # the arguments' fault: no such source, a destination already there, a checkpoint of another kind
    except (ValueError, NotImplementedError, FileNotFoundError, FileExistsError, NotADirectoryError) as exc:
        fail(str(exc), USAGE)
    except OSError as exc:
        fail(str(exc), FAILURE)
    typer.echo(f"converted {src} -> {out}")


@app.command()
def export(run: Path = typer.Argument(..., help="Run folder (--out of train), or one checkpoint folder."),
           out: Path = typer.Argument(..., help="New (or empty) folder for the inference model."),
           step: Optional[int] = typer.Option(None, "--step", min=0, help="Checkpoint step (default: the latest).")) -> None:
    """Write a clean inference folder (config, weights, tokenizer, chat template; no optimizer or RNG state)
    that `from_pretrained` and `V2PEGenerator.load` read."""
    from .checkpoint import CheckpointError
    from .export import ExportError
    from .export import export as run_export

    try:
        written = run_export(run, out, step=step)
    except ExportError as exc:
        fail(str(exc), USAGE)
    except (CheckpointError, OSError) as exc:
        fail(str(exc), FAILURE)
    typer.echo(f"exported {run} -> {written}")


@app.command("eval")
def eval_(
    model: str = typer.Option(..., help="'tiny', a native InternVL folder, a run folder (latest checkpoint) or a "
                                        "checkpoint folder."),
    data: list[str] = typer.Option(..., help="Build folder(s) or MM-NIAH folders/annotation files; repeatable."),
    out: Path = typer.Option(..., help="Folder for predictions.jsonl, scores and the report."),
    stride: str = typer.Option("default", help="Stride(s) of V2PE positions: 64, or a sweep 1,16,64,256,default."),
    mode: str = typer.Option("generate", help="generate (greedy) or teacher_forced (one forward; for long samples)."),
    data_format: str = typer.Option("wds", "--format", help="Which copy of a build to read: wds, parquet, internvl."),
    images: Optional[Path] = typer.Option(None, help="MM-NIAH images root (default: ../images of the annotations)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Evaluate the first N items only."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1,
                                                 help="Reply budget (default: the benchmark's per task)."),
    max_tiles: Optional[int] = typer.Option(None, "--max-tiles", min=1,
                                            help="Tiles per image for MM-NIAH inputs (default by --style: official 1 "
                                                 "as MM-NIAH; v2pe 5, or 12 with --mode teacher_forced, as V2PE)."),
    style: str = typer.Option("official", help="official (the benchmarks' own code) or v2pe (V2PE's fork): MM-NIAH "
                                               "prompt, rules, budgets and tiles; ChartQA argument order."),
    tokenizer: Optional[str] = typer.Option(None, help="Tokenizer folder (default: the model's)."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Answer every item with V2PE positions at each stride (resumable), then score and write the report."""
    from .eval.inputs import EvalInputError
    from .eval.run import default_max_tiles, evaluate, load_generator, model_identity, parse_strides

    try:
        strides = parse_strides(stride)
        tiles = max_tiles if max_tiles is not None else default_max_tiles(style, mode)
        identity = model_identity(model)
    except ValueError as exc:
        fail(str(exc))
    with _one_line(EvalInputError):
        gen = load_generator(model, tokenizer=tokenizer, device=device)
        pred = evaluate(gen, data, out, strides=strides, mode=mode, data_format=data_format,
                        images_root=str(images) if images else None, limit=limit, max_new_tokens=max_new_tokens,
                        style=style, max_tiles=tiles, identity=identity, progress=not quiet)
    _score_and_report([pred], data, out, data_format=data_format, images=images, max_tiles=tiles, style=style,
                      tokenizer=gen.tokenizer, limit=limit)


@app.command()
def score(
    predictions: list[Path] = typer.Argument(..., help="Predictions JSONL: ours, or MM-NIAH answer files "
                                                      "(<model>_<task>.jsonl, as its eval_internvl.py writes them)."),
    data: Optional[list[str]] = typer.Option(None, help="The build folder(s) or MM-NIAH inputs the predictions "
                                                        "answer (not needed for MM-NIAH answer files)."),
    out: Optional[Path] = typer.Option(None, help="Report folder (default: beside the first predictions file)."),
    data_format: str = typer.Option("wds", "--format", help="Which copy of a build to read: wds, parquet, internvl."),
    images: Optional[Path] = typer.Option(None, help="MM-NIAH images root."),
    max_tiles: Optional[int] = typer.Option(None, "--max-tiles", min=1,
                                            help="Tiles per image for MM-NIAH inputs (default by --style)."),
    style: str = typer.Option("official", help="official (the benchmarks' own code) or v2pe (V2PE's fork)."),
    tokenizer: Optional[str] = typer.Option(None, help="Tokenizer that counts MM-NIAH inputs (default: bundled)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Expect predictions for the first N items only."),
) -> None:
    """Score predictions against the answers; missing, duplicated or malformed lines are reported one by one."""
    from v2pe_common.tokenizer import load_tokenizer

    try:
        tok = load_tokenizer(tokenizer)
    except ValueError as exc:
        fail(str(exc))
    _score_and_report(predictions, data or [], out or predictions[0].parent, data_format=data_format, images=images,
                      max_tiles=max_tiles, style=style, tokenizer=tok, limit=limit)


def _score_and_report(predictions, data, out: Path, *, data_format, images, max_tiles, style, tokenizer,
                      limit=None) -> None:
    import json

    from .eval.inputs import EvalInputError
    from .eval.lemma import WordDataMissing
    from .eval.report import write_report
    from .eval.run import SCORES, score_predictions

    try:
        rows, problems = score_predictions(predictions, data, data_format=data_format, tokenizer=tokenizer,
                                           max_tiles=max_tiles, images_root=str(images) if images else None,
                                           style=style, limit=limit)
    except (EvalInputError, ValueError, WordDataMissing) as exc:  # the last: the eval extra is not installed
        fail(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / SCORES, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    written, warnings = write_report(rows, out)
    for line in warnings:
        typer.echo(line, err=True)
    for line in problems.lines():
        typer.echo(f"warning: {line}", err=True)
    by_stride: dict[str, list[float]] = {}
    for r in rows:
        by_stride.setdefault(r["stride"], []).append(r["score"])
    summary = ", ".join(f"stride {s}: {100 * sum(v) / len(v):.1f}" for s, v in sorted(by_stride.items()))
    typer.echo(f"{len(rows)} predictions scored ({summary or 'none'}); report: {written['markdown']}")
    if problems:
        fail(f"{len(problems.lines())} prediction line(s) could not be scored (listed above)", FAILURE)
