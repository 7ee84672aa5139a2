"""`python -m experiments.ladder run --rung a --out runs/ladder`: train a rung (and the rungs it starts from).

`ablate --plan NAME`: run every variant of `ablations/NAME.yaml` (a rung with some keys changed) and table
their accuracy side by side. Every stage resumes; see docs/experiments/learning.md.
"""

from __future__ import annotations

from pathlib import Path

import typer

from v2pe_common.cli_logging import FAILURE, fail, make_app
from v2pe_common.recipe import ConfigError, read_recipe

from ..commands import ExperimentError
from ..stage_config import parse_set
from . import report, runner
from .config import RUNGS_DIR, chain

app = make_app("v2pe-ladder", __doc__)
ABLATIONS_DIR = Path(__file__).parent / "ablations"


def _common(seeds: str | None, parallel: int | None) -> dict:
    out = {}
    if seeds:
        try:
            out["seeds"] = [int(s) for s in seeds.split(",")]
        except ValueError:
            raise ConfigError(f"--seeds: expected comma-separated ints, got {seeds!r}") from None
    if parallel is not None:
        out["parallel"] = parallel
    return out


def _say(line: str) -> None:
    typer.echo(line, err=True)


def run_chain(name: str, out: Path, extra: dict, common: dict, done: dict) -> dict:
    """Run rung `name` after the rungs it starts from (each once per call); returns its result."""
    for rung in chain(name, extra, common):
        if rung.name not in done:
            done[rung.name] = runner.run_rung(rung, out, _say)
    return done[name if not extra.get("name") else extra["name"]]


@app.command()
def run(
    rung: str = typer.Option("a", help="Rung(s): a, b, c, d (rungs/*.yaml), comma-separated, 'all', or a YAML path."),
    out: Path = typer.Option(Path("runs/ladder"), help="Ladder folder; rerunning resumes every stage."),
    seeds: str = typer.Option(None, help="Seeds of every rung run, e.g. 0,1 (default: each rung's own)."),
    parallel: int = typer.Option(None, help="Training / evaluation processes at once (default: the rung's)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key of the named rung, e.g. --set steps=200."),
) -> None:
    """Build, train and evaluate rungs of the ladder; write OUT/LADDER.md (exit 1 when a rung fails)."""
    names = sorted(p.stem for p in RUNGS_DIR.glob("*.yaml")) if rung == "all" else [r for r in rung.split(",") if r]
    out = out.expanduser().resolve()
    try:
        extra, common = parse_set(set_), _common(seeds, parallel)
        if extra and len(names) > 1:
            raise ConfigError("--set: name one rung to override")
        done: dict = {}
        results = [run_chain(name, out, extra, common, done) for name in names]
    except ConfigError as exc:
        fail(str(exc))
    except ExperimentError as exc:
        fail(str(exc), FAILURE)
    shown = list(done.values())
    path = report.write(out / "LADDER.md", report.ladder_markdown(shown))
    typer.echo(path.read_text())
    if not all(r["passed"] for r in results):
        raise typer.Exit(FAILURE)


@app.command()
def ablate(
    plan: str = typer.Option(..., help="Plan: a name of ablations/*.yaml or a YAML path."),
    out: Path = typer.Option(Path("runs/ladder"), help="Ladder folder (variants share its data and rungs)."),
    only: str = typer.Option(None, help="Run only these variants (comma-separated)."),
) -> None:
    """Run each variant of a plan (rung + changed keys, same seeds) and write OUT/ABLATION_<plan>.md."""
    path = Path(plan) if plan.endswith((".yaml", ".yml")) else ABLATIONS_DIR / f"{plan}.yaml"
    out = out.expanduser().resolve()
    try:
        if not path.is_file():
            names = sorted(p.stem for p in ABLATIONS_DIR.glob("*.yaml"))
            raise ConfigError(f"plan {plan!r}: no file {path}; choose one of {names} or give a YAML path")
        spec = read_recipe(path)
        base, variants = spec.get("rung"), spec.get("variants")
        if not isinstance(base, str) or not isinstance(variants, dict) or not variants:
            raise ConfigError(f"{path}: expected keys 'rung' (a rung name) and 'variants' ({{name: {{key: value}}}})")
        common = {k: spec[k] for k in ("seeds", "parallel") if k in spec}
        wanted = set(only.split(",")) if only else set(variants)
        unknown = sorted(wanted - set(variants))
        if unknown:
            raise ConfigError(f"--only: no variant {unknown[0]!r} in {path}; variants: {sorted(variants)}")
        done: dict = {}
        rows = []
        for name, changes in variants.items():
            if name not in wanted:
                continue
            changes = dict(changes or {})
            if not all(isinstance(k, str) for k in changes):
                raise ConfigError(f"{path}: variants.{name}: expected a mapping of keys to values")
            _say(f"== variant {name}: {changes or 'as the rung is'}")
            result = run_chain(base, out, {**changes, "name": f"{base}-{name}"}, common, done)
            rows.append((name, changes, result))
    except ConfigError as exc:
        fail(str(exc))
    except ExperimentError as exc:
        fail(str(exc), FAILURE)
    report.curves_plot(rows, out / f"ABLATION_{path.stem}.png")
    path = report.write(out / f"ABLATION_{path.stem}.md", report.ablation_markdown(path.stem, base, rows))
    typer.echo(path.read_text())


if __name__ == "__main__":
    app()
