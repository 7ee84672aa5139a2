"""`v2pe-train eval` and `score`: resumable predictions, then scores and the report.

Predictions are one JSON object a line in `OUT/predictions.jsonl`: {"id", "stride", "mode", "prediction"}
(teacher-forced lines add "correct"). A line is appended and flushed as soon as its reply exists, so a
killed run loses at most the item in flight; a rerun skips every (id, stride) already there. Scoring
joins predictions with the answers of the same inputs; missing, duplicated, malformed and unknown lines
are reported one by one (`Problems`), never scored silently.

Strides: an integer S (1..256, a power of two) evaluates with `v2pe_fix` positions of stride S; `default`
with plain integer positions (the same numbers as S = 256).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .inputs import EvalInputError, EvalItem, iter_items

PREDICTIONS = "predictions.jsonl"
SCORES = "scores.jsonl"
MODES = ("generate", "teacher_forced")
STRIDES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# MM-NIAH's submission files: ${model}_${task}-${val|test}.jsonl with {"id": int, "response": str}
SUBMISSION = re.compile(r"_(?P<task>[a-z]+-(?:text|image))-(?:val|test)\.jsonl$")


def load_generator(spec: str | Path, *, tokenizer: str | None = None, device: str = "cpu"):
    """A generator for a preset ('tiny'), a native InternVL folder, a training run (its latest checkpoint) or
    one checkpoint folder (`RUN/checkpoints/step_N`: the run's model, these weights)."""
    from .inference import V2PEGenerator

    path = Path(spec)
    if (path / "checkpoints").is_dir():  # a run folder: its latest checkpoint
        from ..checkpoint import latest_checkpoint

        found = latest_checkpoint(path)
        if found is None:
            raise EvalInputError(f"--model: run {path} holds no checkpoint yet")
        path = found
    meta_file = path / "meta.json"
    if not (meta_file.is_file() and (path / "model.safetensors").is_file()):
        return V2PEGenerator.load(spec, tokenizer=tokenizer, device=device)
    from safetensors.torch import load_model

    config = json.loads(meta_file.read_text()).get("config") or {}
    if "model" not in config:
        raise EvalInputError(f"--model: {meta_file} names no model (not a v2pe-train checkpoint)")
    gen = V2PEGenerator.load(config["model"], tokenizer=tokenizer or config.get("tokenizer"), device=device,
                             seed=int(config.get("seed", 0)))
    load_model(gen.model, str(path / "model.safetensors"), strict=True, device=str(gen.device))
    gen.model.requires_grad_(False)
    return gen


def parse_strides(text: str | Sequence) -> list[int | str]:
    """'1,16,64,default' -> [1, 16, 64, 'default'] (order kept, repeats dropped); ValueError naming a bad one."""
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else [str(p) for p in text]
    out: list[int | str] = []
    for p in parts:
        if p == "default":
            value: int | str = "default"
        elif p.isdigit() and int(p) in STRIDES:
            value = int(p)
        else:
            raise ValueError(f"--stride: {p!r} is neither 'default' nor one of {list(STRIDES)}")
        if value not in out:
            out.append(value)
    if not out:
        raise ValueError("--stride: give at least one stride")
    return out


def read_done(path: Path) -> set[tuple[str, str]]:
    """(id, stride) pairs already predicted; a line cut by a kill (the last, unparsable) is dropped."""
    done: set[tuple[str, str]] = set()
    if not path.exists():
        return done
    lines = path.read_text(encoding="utf-8").splitlines()
    keep = []
    for line in lines:
        try:
            row = json.loads(line)
            done.add((str(row["id"]), str(row["stride"])))
            keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a half-written line: rewritten below, its item predicted again
    if len(keep) != len(lines):
        path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
    return done


def evaluate(generator, data: Sequence[str], out: str | Path, *, strides: Sequence[int | str] = ("default",),
             mode: str = "generate", data_format: str = "wds", images_root: str | None = None, limit: int | None = None,
             max_new_tokens: int | None = None, style: str = "official", template: str = "internlm2-chat",
             max_tiles: int = 12, progress: bool = True) -> Path:
    """Predict every (item, stride) not yet in OUT/predictions.jsonl; return that file's path.

    `template` and `max_tiles` apply to MM-NIAH inputs (our records carry their own)."""
    from tqdm import tqdm

    if mode not in MODES:
        raise ValueError(f"--mode: choose one of {list(MODES)}, got {mode!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pred_path = out / PREDICTIONS
    done = read_done(pred_path)
    items = iter_items(data, data_format=data_format, images_root=images_root, style=style,
                       **accounting(generator.tokenizer, template, max_tiles))
    bar = tqdm(total=limit, unit="item", disable=not progress, desc=f"eval ({mode})")
    with open(pred_path, "a", encoding="utf-8") as fh:
        for n, item in enumerate(items):
            if limit is not None and n >= limit:
                break
            todo = [s for s in strides if (item.id, str(s)) not in done]
            if todo:
                prompt = generator.prepare(item.record, item.load_images())
                for stride in todo:
                    row = _predict(generator, item, prompt, stride, mode, max_new_tokens)
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                    fh.flush()
            bar.update(1)
    bar.close()
    return pred_path


def _predict(generator, item: EvalItem, prompt, stride, mode: str, max_new_tokens: int | None) -> dict:
    t0 = time.perf_counter()
    row = {"id": item.id, "stride": str(stride), "mode": mode}
    if mode == "teacher_forced":
        tf = generator.teacher_forced(prompt, stride=stride)
        row.update(prediction=tf.predicted_text, correct=bool(tf.correct))
    else:
        budget = max_new_tokens or item.max_new_tokens()
        row["prediction"] = generator.generate(prompt, stride=stride, max_new_tokens=budget)[0].text
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


@dataclass
class Problems:
    malformed: list[str] = field(default_factory=list)  # "file:line: why"
    duplicated: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # ids that no input holds
    missing: list[str] = field(default_factory=list)  # "id @ stride" with no prediction

    def lines(self) -> list[str]:
        return ([f"malformed: {m}" for m in self.malformed] + [f"duplicated: {d}" for d in self.duplicated]
                + [f"unknown id: {u}" for u in self.unknown] + [f"missing: {m}" for m in self.missing])

    def __bool__(self) -> bool:
        return bool(self.malformed or self.duplicated or self.unknown or self.missing)


def read_predictions(paths: Iterable[str | Path], problems: Problems) -> dict[tuple[str, str], dict]:
    """(id, stride) -> row from our predictions files or MM-NIAH submission files; problems noted, not raised."""
    rows: dict[tuple[str, str], dict] = {}
    for path in map(Path, paths):
        sub = SUBMISSION.search(path.name)
        try:
            lines = path.read_bytes().splitlines()
        except OSError as exc:
            raise EvalInputError(f"{path}: cannot read: {exc.strerror or exc}") from None
        for lineno, raw in enumerate(lines, 1):
            where = f"{path.name}:{lineno}"
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except ValueError as exc:
                problems.malformed.append(f"{where}: not JSON ({exc})")
                continue
            if not isinstance(row, dict) or "id" not in row:
                problems.malformed.append(f"{where}: expected an object with an id")
                continue
            text = row.get("prediction", row.get("response"))
            if not isinstance(text, str):
                problems.malformed.append(f"{where}: prediction/response is {type(text).__name__}, not text")
                continue
            rid = str(row["id"])
            if sub is not None and "prediction" not in row:  # MM-NIAH numbers lines per task file
                rid = re.sub(r"[^A-Za-z0-9_-]+", "_", f"mmniah-{sub.group('task')}-{rid}")
            key = (rid, str(row.get("stride", "default")))
            if key in rows:
                problems.duplicated.append(f"{where}: {rid} @ stride {key[1]} (first in {rows[key]['_where']})")
                continue
            rows[key] = {**row, "id": rid, "prediction": text, "_where": where}
    return rows


def accounting(tokenizer, template: str, max_tiles: int) -> dict:
    """How MM-NIAH lines are counted and tiled (our records say it themselves)."""
    from v2pe_common.template import get_template
    from v2pe_common.tiling import TilingConfig

    return {"tokenizer": tokenizer, "template": get_template(template), "tiling": TilingConfig(max_tiles=max_tiles)}


def score_predictions(paths: Sequence[str | Path], data: Sequence[str], *, data_format: str = "wds",
                      tokenizer=None, template: str = "internlm2-chat", max_tiles: int = 12,
                      images_root: str | None = None, style: str = "official") -> tuple[list[dict], Problems]:
    """Score every prediction against its item's answer; report what cannot be scored."""
    from v2pe_common.tokenizer import load_tokenizer

    problems = Problems()
    preds = read_predictions(paths, problems)
    acc = accounting(tokenizer if tokenizer is not None else load_tokenizer(None), template, max_tiles)
    strides = sorted({k[1] for k in preds}) or ["default"]
    scored: list[dict] = []
    seen: set[str] = set()
    for item in iter_items(data, data_format=data_format, images_root=images_root, style=style, images=False, **acc):
        seen.add(item.id)
        for stride in strides:
            row = preds.get((item.id, stride))
            if row is None:
                problems.missing.append(f"{item.id} @ stride {stride}")
                continue
            try:
                value = float(row["correct"]) if row.get("mode") == "teacher_forced" else item.score(row["prediction"])
            except ValueError as exc:
                problems.malformed.append(f"{row['_where']}: {exc}")
                continue
            scored.append({"id": item.id, "task": item.task, "subset": item.subset, "num_tokens": item.num_tokens,
                           "depth": item.depth, "stride": stride, "score": value, "prediction": row["prediction"]})
    problems.unknown.extend(sorted({k[0] for k in preds} - seen))
    return scored, problems
