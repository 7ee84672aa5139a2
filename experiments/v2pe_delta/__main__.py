"""`python -m experiments.v2pe_delta --scale cpu --out runs/v2pe_delta`: run (or resume) the experiment."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from v2pe_common.cli_logging import FAILURE, fail, make_app
from v2pe_common.recipe import ConfigError

from ..commands import ExperimentError
from ..stage_config import parse_set, remember_settings
from . import lm_loss, report, stages
from .config import dry_run, load_config

app = make_app("v2pe-experiment", __doc__)
STAGES = ("data", "pretrain", "train", "eval", "lm_loss", "report")


@app.command()
def run(
    scale: str = typer.Option("cpu", help="Scale: cpu, gpu (experiments/v2pe_delta/scales) or a YAML path."),
    out: Path = typer.Option(Path("runs/v2pe_delta"), help="Experiment folder; rerunning resumes every stage."),
    until: str = typer.Option("report", help=f"Stop after this stage: {', '.join(STAGES)}."),
    set_: list[str] = typer.Option([], "--set", help="Override a scale key, e.g. --set steps=200 (YAML value)."),
    dry: bool = typer.Option(False, "--dry-run", help="Every stage of the scale at toy size on the CPU (one seed)."),
    report_only: bool = typer.Option(False, "--report-only", help="Only write the report over the complete runs."),
) -> None:
    """Build the data, train one model per position mode and seed, evaluate every length, write the report."""
    if until not in STAGES:
        fail(f"--until: choose one of {list(STAGES)}, got {until!r}")
    try:
        cfg = load_config(scale, parse_set(set_))
        cfg = dry_run(cfg) if dry else cfg
    except ConfigError as exc:
        fail(str(exc))
    out = out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    changed = remember_settings(cfg, out / "scale.json")
    if changed:
        fail(f"{out} holds an experiment with other settings ({', '.join(changed)}); use another --out")
    timings_file = out / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}

    def say(line: str) -> None:
        typer.echo(line, err=True)

    steps = {"data": stages.build_data, "pretrain": stages.pretrain, "train": stages.train_all,
             "eval": stages.eval_all, "lm_loss": lm_loss.measure}
    try:
        for i, name in enumerate(STAGES, 1):
            if report_only and name != "report":
                continue
            say(f"[{i}/{len(STAGES)}] {name}")
            if name == "report":
                passed, path = report.write(cfg, out, timings)
                say(path.read_text().split("\n\n")[1])
                say(f"report: {path}")
                break
            start = time.monotonic()
            steps[name](cfg, out, say)
            timings[name] = timings.get(name, 0.0) + time.monotonic() - start
            timings_file.write_text(json.dumps(timings, indent=1) + "\n")
            if name == until:
                break
    except ExperimentError as exc:
        fail(str(exc), FAILURE)


def _folder_config(out: Path):
    """The settings an experiment folder was run with (its scale.json)."""
    from v2pe_common.recipe import construct

    from ..stage_config import known_key
    from .config import ExperimentConfig

    path = out / "scale.json"
    if not path.is_file():
        fail(f"{out}: no scale.json; not an experiment folder (run the experiment into it first)")
    try:
        return construct(ExperimentConfig, json.loads(path.read_text()), str(path), known_key)
    except (ConfigError, ValueError) as exc:
        fail(str(exc))


@app.command()
def pack(
    out: Path = typer.Option(..., help="Experiment folder."),
    to: Path = typer.Option(..., help="State tar to write (settings, timings, results of every complete run)."),
) -> None:
    """Keep the finished work of an experiment folder in one small tar, to carry to another machine."""
    from . import state

    cfg = _folder_config(out.expanduser().resolve())
    path, runs = state.pack(cfg, out.expanduser().resolve(), to)
    typer.echo(f"{path}: {runs} of {len(cfg.runs())} runs complete ({path.stat().st_size} bytes)")


@app.command()
def unpack(
    state_tar: Path = typer.Option(..., "--from", help="State tar written by `pack`."),
    out: Path = typer.Option(..., help="Experiment folder to resume in (made if missing)."),
) -> None:
    """Put a state tar's finished work into an experiment folder; `run` then skips what it holds."""
    import tarfile

    from . import state

    if not state_tar.is_file():
        fail(f"--from: {state_tar} is not a file")
    try:
        n = state.unpack(state_tar, out.expanduser().resolve())
    except (ExperimentError, OSError, tarfile.TarError) as exc:
        fail(f"{state_tar}: {exc}")
    typer.echo(f"{n} files from {state_tar} -> {out}")


if __name__ == "__main__":
    app()
