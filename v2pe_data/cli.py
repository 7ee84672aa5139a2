"""`v2pe-data`: build long-context multimodal samples, validate build folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from v2pe_common.buildfolder import MANIFEST_FILE
from v2pe_common.cli_logging import FAILURE, USAGE, fail, make_app
from v2pe_common.recipe import ConfigError

from .errors import V2PEDataError

app = make_app("v2pe-data", __doc__)


# Only these become one line on stderr: the package's own errors and the recipe's. Anything else is a bug and
# keeps its traceback; an OSError names a file of the user's environment and is said in one line too.
def _exit_code(exc: BaseException) -> int:
    return USAGE if isinstance(exc, ConfigError) or getattr(exc, "usage", False) else FAILURE


def _os_message(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


@app.command()
def build(
    task: str = typer.Argument(..., help="Task to build: long_vqa (documents and pasted canvases), long_mr "
                                         "(needles in interleaved haystacks) or milebench (MileBench task folders)."),
    length: Optional[str] = typer.Option(None, "--len", help="Upper edge of the length bin: 32k, 64K, 1m, 131072."),
    min_length: Optional[str] = typer.Option(None, "--min-len", help="Lower edge of the bin (default 7/8 of --len)."),
    num_samples: Optional[int] = typer.Option(None, "--num-samples", "-n", help="Samples to build."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output folder (default out/TASK_LEN)."),
    seed: Optional[int] = typer.Option(None, help="Seed; the same seed and arguments give identical bytes."),
    split: Optional[str] = typer.Option(None, help="Source split to draw from: train, val or test."),
    source: Optional[list[str]] = typer.Option(
        None, help="Source, repeatable: synthetic (offline default), docvqa=PATH, infovqa=PATH, chartqa=PATH, "
                   "or hub:ID in place of PATH when a network exists. Several sources share samples equally."),
    mode: Optional[str] = typer.Option(None, help="concat (pages in sequence) or paste (labelled canvases); "
                                                  "default per source: chartqa pastes, the others concatenate."),
    paste_grid: Optional[int] = typer.Option(None, "--paste-grid", help="Paste canvases: N x N cells of 448 px (3)."),
    formats: Optional[str] = typer.Option(None, "--format", help="Comma list of wds, parquet, internvl, mmniah "
                                                                 "(wds always; default wds,parquet)."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad source row or missing source."),
    depth: Optional[str] = typer.Option(None, help="Fix the target's relative depth in [0,1], or (long_mr) a grid "
                                                   "START:STOP:STEP such as 0:1:0.2 (default: uniform)."),
    option: Optional[list[str]] = typer.Option(
        None, "--option", "-O", help="Task option KEY=VALUE (VALUE read as YAML), repeatable; long_mr: subset=NAME[,NAME], "
                                     "num_needles=[2,5], haystack=synthetic|interleaved=PATH, needles=synthetic|haystack; milebench: path=DIR, "
                                     "tasks=ALFRED,GPR1200, combined=N."),
    shard_size: Optional[str] = typer.Option(None, "--shard-size", help="Samples per shard (8) or a byte cap (256MB)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Parallel worker processes."),
    tokenizer: Optional[str] = typer.Option(None, help="Tokenizer of the target model: a local folder, or a Hub id org/name (from the HF cache, or downloaded)."),
    template: Optional[str] = typer.Option(None, help="Chat template: internlm2-chat or chatml."),
    max_tiles: Optional[int] = typer.Option(None, "--max-tiles", help="InternVL max tiles per image (12)."),
    recipe: Optional[Path] = typer.Option(None, help="YAML recipe; flags override its keys."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    num_shards: Optional[int] = typer.Option(
        None, "--num-shards", help="Split the shard tasks over N runs sharing --out (default: "
                                   "$SLURM_ARRAY_TASK_COUNT when set); `v2pe-data merge` writes the manifest."),
    shard_index: Optional[int] = typer.Option(
        None, "--shard-index", help="This run's index in [0, N): it writes tasks i with i % N == I (default: "
                                    "$SLURM_ARRAY_TASK_ID - $SLURM_ARRAY_TASK_MIN when set)."),
    executor: Optional[str] = typer.Option(None, help="local (worker processes) or ray (tasks on the Ray cluster "
                                                      "of $RAY_ADDRESS; needs the ray extra)."),
) -> None:
    """Build samples of an exact token budget into webdataset shards plus manifest.json."""
    from v2pe_common.recipe import read_recipe
    from v2pe_common.tokenizer import BUNDLED

    from .config import BuildConfig, parse_options, parse_shard_size
    from .progress import status_line

    flags = {
        "task": task, "length": length, "min_length": min_length, "num_samples": num_samples, "out": out,
        "seed": seed, "split": split, "depth": depth, "workers": workers,
        "tokenizer": tokenizer, "template": template, "max_tiles": max_tiles, "mode": mode,
        "paste_grid": paste_grid, "formats": formats, "strict": strict or None, "executor": executor,
    }
    try:
        flags.update(shard_flags(num_shards, shard_index, os.environ))
        if source:
            flags["sources"] = list(source)
        if option:  # each --option overrides one key of the recipe's options, the others stay
            base = read_recipe(recipe).get("options") if recipe else None
            flags["options"] = {**(base if isinstance(base, dict) else {}), **parse_options(option)}
        if shard_size is not None:
            flags["shard_size"], flags["shard_bytes"] = parse_shard_size(shard_size)
        given = {k: v for k, v in flags.items() if v is not None}
        cfg = BuildConfig.from_yaml(recipe, given) if recipe else BuildConfig.from_dict(given, where="command line")
        # before the imports and the tokenizer load, seconds of silence otherwise (on a terminal only, so a
        # refused build still says one line where it is captured)
        status_line(f"loading tokenizer {cfg.tokenizer or BUNDLED} ...", False if quiet else None)
        from .build import build as run_build

        def bundled_warning() -> None:  # once the build is accepted, before its first sample
            if cfg.tokenizer in (None, "", BUNDLED):
                typer.echo("warning: counting with the bundled tokenizer (token counts are exact only for it); "
                           "pass --tokenizer <model dir> for the model you will train", err=True)

        manifest = run_build(cfg, show_progress=not quiet, on_start=bundled_warning)
    except (ConfigError, V2PEDataError) as exc:
        fail(str(exc), _exit_code(exc))
    except OSError as exc:
        fail(_os_message(exc), FAILURE)
    if "shard_index" in manifest:  # a sharded run: its part only
        typer.echo(f"shard index {manifest['shard_index']} of {manifest['num_shards']}: {manifest['tasks']} shard "
                   f"task(s) done ({manifest['written']} written now) -> {cfg.out}; run `v2pe-data merge {cfg.out}` "
                   "when every index is done")
        return
    stats = manifest["token_stats"]
    tars = sum(1 for s in manifest["shards"] if s["format"] == "wds")
    typer.echo(
        f"{manifest['num_samples']} samples in {tars} shards ({', '.join(cfg.formats)}) -> {cfg.out} "
        f"(tokens min {stats['min']}, max {stats['max']}, mean {stats['mean']:.0f})"
        if manifest["num_samples"] else f"0 samples -> {cfg.out}"
    )
    for src in manifest["sources"]:
        if src.get("status", "available") != "available":
            typer.echo(f"warning: source {src.get('name')!r} was skipped ({src['status']}); "
                       "the other sources took its share (--strict makes this an error)", err=True)


def shard_flags(num_shards: int | None, shard_index: int | None, env) -> dict:
    """`num_shards`/`shard_index` from the flags, else from a Slurm array's variables (ids may start at any
    --array MIN, so the index is TASK_ID - TASK_MIN); a variable that is not an integer is a ConfigError."""
    def var(name: str) -> int | None:
        value = env.get(name)
        if value is None or value == "":
            return None
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"${name}: expected an integer, got {value!r}") from None

    if num_shards is None:
        num_shards = var("SLURM_ARRAY_TASK_COUNT")
    if shard_index is None and var("SLURM_ARRAY_TASK_ID") is not None:
        shard_index = var("SLURM_ARRAY_TASK_ID") - (var("SLURM_ARRAY_TASK_MIN") or 0)
    return {k: v for k, v in (("num_shards", num_shards), ("shard_index", shard_index)) if v is not None}


@app.command()
def merge(out: Path = typer.Argument(..., help="Build folder the shard runs (--num-shards) wrote into.")) -> None:
    """Check every shard task of a sharded build (marker and sha256) and write its manifest.json."""
    from .build import merge as run_merge

    try:
        manifest = run_merge(out, show_progress=None)
    except V2PEDataError as exc:
        fail(str(exc), _exit_code(exc))
    except OSError as exc:
        fail(_os_message(exc), FAILURE)
    tars = sum(1 for s in manifest["shards"] if s["format"] == "wds")
    typer.echo(f"{manifest['num_samples']} samples in {tars} shards -> {out / MANIFEST_FILE}")


@app.command()
def convert(
    out: Path = typer.Argument(..., help="Finished build folder holding manifest.json."),
    to: str = typer.Option(..., "--to", help="Formats to add, comma list: parquet, internvl, mmniah (long_mr)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Add formats to a finished build from its tar shards: the files a build asking for them would write."""
    from .convert import convert as run_convert, parse_formats

    try:
        done = run_convert(out, parse_formats(to), show_progress=not quiet)
    except V2PEDataError as exc:
        fail(str(exc), _exit_code(exc))
    except OSError as exc:
        fail(_os_message(exc), FAILURE)
    if done["present"]:
        typer.echo(f"{out} already holds {', '.join(done['present'])}; left as it is")
    if done["added"]:
        typer.echo(f"added {', '.join(done['added'])} to {done['manifest']['num_samples']} samples -> {out} "
                   f"(formats now {', '.join(done['manifest']['formats'])})")


@app.command()
def show(
    out: Path = typer.Argument(..., help="Build folder holding manifest.json."),
    sample_id: str = typer.Argument(..., metavar="ID", help="Sample id, e.g. long_vqa-train-00000003."),
    dest: Optional[Path] = typer.Option(None, "--out", "-o", help="FILE.png or FILE.html (default: ID.png)."),
    thumb: int = typer.Option(320, help="Thumbnail side in pixels (HTML: a click enlarges to 1600)."),
) -> None:
    """Preview one sample: its images in order as a contact sheet, question, answer, targets and needles marked."""
    from .show import show as run_show

    dest = dest or Path(f"{sample_id}.png")
    try:
        layout = run_show(out, sample_id, dest, thumb=thumb)
    except V2PEDataError as exc:
        fail(str(exc), _exit_code(exc))
    except OSError as exc:
        fail(_os_message(exc), FAILURE)
    typer.echo(f"{sample_id}: {len(layout['cells'])} images -> {dest}")


@app.command()
def validate(
    out: Path = typer.Argument(..., help="Build folder holding manifest.json."),
    tokenizer: Optional[str] = typer.Option(None, help="Tokenizer to recount with (default: the build's own)."),
    no_images: bool = typer.Option(False, "--no-images", help="Skip decoding images."),
) -> None:
    """Check a build folder against the schemas and the manifest's hashes; recount tokens."""
    from .validate import validate_build

    try:
        summary = validate_build(out, tokenizer_path=tokenizer, check_images=not no_images, show_progress=None)
    except V2PEDataError as exc:
        fail(str(exc), FAILURE)
    for line in summary["warnings"]:
        typer.echo(f"warning: {line}", err=True)
    recount = f", {summary['recounted']} token counts re-checked" if summary["recounted"] else ""
    copies = f"; {', '.join(summary['copies'])} copies match" if summary["copies"] else ""
    typer.echo(f"ok: {summary['samples']} samples in {summary['shards']} shards{recount}{copies}")


@app.command()
def contamination(
    build: Path = typer.Argument(..., help="Build folder holding manifest.json."),
    against: list[Path] = typer.Option(..., "--against", help="MM-NIAH folder, MileBench folder or another build; "
                                                              "repeatable."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the full report as JSON here."),
    fail_on_overlap: bool = typer.Option(False, "--fail-on-overlap", help="Exit 1 when any overlap is found."),
) -> None:
    """Samples of BUILD that share an image (sha256 of its bytes) or a normalised question + answer with each
    --against input: a table, and JSON with --json."""
    import json

    from .contamination import compare, table

    try:
        report = compare(build, list(against))
        if json_out is not None:
            json_out.write_text(json.dumps(report, indent=1) + "\n")
    except V2PEDataError as exc:
        fail(str(exc), FAILURE)
    except OSError as exc:
        fail(_os_message(exc), FAILURE)
    typer.echo(table(report))
    if fail_on_overlap and any(a["image_overlap"] or a["text_overlap"] for a in report["against"]):
        fail("overlap found (--fail-on-overlap)", FAILURE)


@app.command()
def stats(
    out: Path = typer.Argument(..., help="Build folder holding manifest.json."),
    plot: Optional[Path] = typer.Option(None, help="Also write a PNG: token lengths, target depths, tiles per image."),
) -> None:
    """Distributions of a build: tokens per sample, target depth, tiles per image, subsets."""
    import json

    from .distributions import plot as draw
    from .distributions import summarize

    try:
        summary = summarize(out, show_progress=None)
        if plot is not None and summary["samples"]:
            draw(summary, plot)
    except V2PEDataError as exc:
        fail(str(exc), FAILURE)
    except OSError as exc:
        fail(_os_message(exc), FAILURE)
    typer.echo(json.dumps({k: v for k, v in summary.items() if not k.startswith("_")}, indent=1))


@app.command()
def card(out: Path = typer.Argument(..., help="Finished build folder holding manifest.json.")) -> None:
    """Rewrite OUT/README.md, the dataset card that `datasets.load_dataset(OUT)` and the Hub read."""
    from .card import regenerate

    try:
        path = regenerate(out)
    except V2PEDataError as exc:
        fail(str(exc), FAILURE)
    except OSError as exc:
        fail(_os_message(exc), FAILURE)
    typer.echo(f"wrote {path}")


@app.command()
def push(
    out: Path = typer.Argument(..., help="Finished build folder holding manifest.json."),
    repo_id: str = typer.Option(..., "--repo-id", help="Hub dataset repo ORG/NAME (created if absent)."),
    include: Optional[str] = typer.Option(None, help="Also push these layouts, comma list: wds, internvl, mmniah "
                                                     "(parquet and the card always)."),
    private: bool = typer.Option(False, "--private", help="Create the repo private."),
    revision: Optional[str] = typer.Option(None, help="Branch to commit to (created if absent; default main)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the commit plan; touch no network."),
    chunk_files: int = typer.Option(100, "--chunk-files", help="Files per commit at most."),
    chunk_bytes: str = typer.Option("2GB", "--chunk-bytes", help="Bytes per commit at most (a larger file goes alone)."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for the Hub to answer a request."),
    config: Optional[str] = typer.Option(None, "--config", help="Config name in the repo: the build goes under "
                                                                "NAME/, its split beside the config's other splits "
                                                                "(default: task and length bin, e.g. long_vqa_64k)."),
) -> None:
    """Publish a build to the Hugging Face Hub in resumable chunks; a rerun skips files already there. Several
    builds share a repo: each is one config and split, and the repo's card lists them all."""
    from .config import parse_shard_size
    from .hub import PushError, parse_include, push as run_push, use_timeout

    try:
        try:
            max_bytes = parse_shard_size(chunk_bytes)[1]
        except ConfigError:
            max_bytes = None
        if max_bytes is None:
            raise PushError(f"--chunk-bytes: expected a byte size such as 500MB, got {chunk_bytes!r}", usage=True)
        if timeout <= 0:
            raise PushError("--timeout: must be positive", usage=True)
        if not dry_run:
            use_timeout(timeout)
        run_push(out, repo_id, include=parse_include(include), private=private, revision=revision,
                 dry_run=dry_run, max_files=chunk_files, max_bytes=max_bytes, echo=typer.echo, config=config)
    except V2PEDataError as exc:
        fail(str(exc), _exit_code(exc))
