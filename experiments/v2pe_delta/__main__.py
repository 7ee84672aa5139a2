"""`python -m experiments.v2pe_delta --scale cpu --out runs/v2pe_delta`: run (or resume) the experiment."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
import yaml

from v2pe_common.cli_logging import FAILURE, fail, make_app
from v2pe_common.recipe import ConfigError

from . import lm_loss, report, stages
from .config import field_defaults, load_config

app = make_app("v2pe-experiment", __doc__)
STAGES = ("data", "train", "eval", "lm_loss", "report")


def _overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


@app.command()
def run(
    scale: str = typer.Option("cpu", help="Scale: toy, cpu, gpu (experiments/v2pe_delta/scales) or a YAML path."),
    out: Path = typer.Option(Path("runs/v2pe_delta"), help="Experiment folder; rerunning resumes every stage."),
    until: str = typer.Option("report", help=f"Stop after this stage: {', '.join(STAGES)}."),
    set_: list[str] = typer.Option([], "--set", help="Override a scale key, e.g. --set steps=200 (YAML value)."),
) -> None:
    """Build the data, train one model per position mode and seed, evaluate every length, write the report."""
    if until not in STAGES:
        fail(f"--until: choose one of {list(STAGES)}, got {until!r}")
    try:
        cfg = load_config(scale, _overrides(set_))
    except ConfigError as exc:
        fail(str(exc))
    out = out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    scale_file = out / "scale.json"
    settings = json.loads(json.dumps(vars(cfg)))
    if scale_file.is_file():
        # a key the folder's settings lack (added to the scales since) counts as its default
        before = {**json.loads(json.dumps(field_defaults())), **json.loads(scale_file.read_text())}
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            fail(f"{out} holds an experiment with other settings ({', '.join(changed)}); use another --out")
    scale_file.write_text(json.dumps(settings, indent=1) + "\n")
    timings_file = out / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}

    def say(line: str) -> None:
        typer.echo(line, err=True)

    steps = {"data": stages.build_data, "train": stages.train_all, "eval": stages.eval_all,
             "lm_loss": lm_loss.measure}
    try:
        for i, name in enumerate(STAGES, 1):
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
    except stages.ExperimentError as exc:
        fail(str(exc), FAILURE)


if __name__ == "__main__":
    app()
