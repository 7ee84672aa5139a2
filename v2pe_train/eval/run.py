"""`v2pe-train eval` and `score`: resumable predictions, then scores and the report.

Predictions are one JSON object a line in `OUT/predictions.jsonl`: {"id", "stride", "mode", "prediction"}
(teacher-forced lines add "correct", a boolean). A line is appended and flushed as soon as its reply exists,
so a killed run loses at most the item in flight; a rerun skips every (id, stride) already there, after
checking that `OUT/eval.json` names the same model, mode, budget, style and tiling (`EvalIdentity`).
Scoring joins predictions with the answers of the same inputs; missing, duplicated, malformed and unknown
lines are reported one by one (`Problems`), never scored silently. MM-NIAH's own answer files
(`<model>_<task>.jsonl`, see `mmniah_report`) are read too, and scored from their own lines when no
`--data` is given.

Strides: an integer S (1..256, a power of two) evaluates with `v2pe_fix` positions of stride S; `default`
with plain integer positions (the same numbers as S = 256).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..config import saved_settings
from ..positions import STRIDES
from . import mmniah_report as mr
from . import tasks
from .inputs import MILEBENCH_V2PE_TILES, EvalInputError, EvalItem, iter_items, retile

PREDICTIONS = "predictions.jsonl"
SCORES = "scores.jsonl"
MODES = ("generate", "teacher_forced")
IDENTITY = "eval.json"


def load_generator(spec: str | Path, *, tokenizer: str | None = None, device: str = "cpu"):
    """A generator for a preset ('tiny'), a native InternVL folder, a training run (its latest checkpoint) or
    one checkpoint folder (`RUN/checkpoints/step_N`: the run's model, these weights)."""
    from ..model_files import folder_max_tiles
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

    config = saved_settings(json.loads(meta_file.read_text()).get("config") or {})
    if "model" not in config:
        raise EvalInputError(f"--model: {meta_file} names no model (not a v2pe-train checkpoint)")
    gen = V2PEGenerator.load(config["model"], tokenizer=tokenizer or config.get("tokenizer"), device=device,
                             seed=int(config.get("seed", 0)))
    load_model(gen.model, str(path / "model.safetensors"), strict=True, device=str(gen.device))
    gen.model.requires_grad_(False)
    gen.max_tiles = folder_max_tiles(path, gen.max_tiles)  # the checkpoint's image processor, not the base's
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
    """(id, stride) pairs already predicted. A line cut by a kill (unparsable, or cut inside a UTF-8
    character) is dropped, and the file is rewritten without it atomically (temporary file, then rename); so is
    a whole last line that lacks its newline, which the next appended reply would otherwise join."""
    done: set[tuple[str, str]] = set()
    if not path.exists():
        return done
    data = path.read_bytes()
    lines = data.splitlines()
    keep = []
    for raw in lines:
        try:
            row = json.loads(raw.decode("utf-8"))
            done.add((str(row["id"]), str(row["stride"])))
            keep.append(raw)
        except (ValueError, KeyError, TypeError):
            continue  # a half-written line: rewritten below, its item predicted again
    if len(keep) != len(lines) or (data and not data.endswith(b"\n")):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(b"".join(k + b"\n" for k in keep))
        os.replace(tmp, path)
    return done


def model_identity(spec: str | Path) -> dict:
    """What a model is, for the eval folder's identity: a preset by name; a training run's checkpoint by its
    run id and step; any other folder by the sha256 of its weight files."""
    path = Path(spec)
    if not path.exists():
        return {"preset": str(spec)}
    if (path / "checkpoints").is_dir():
        from ..checkpoint import latest_checkpoint

        found = latest_checkpoint(path)
        if found is None:
            raise EvalInputError(f"--model: run {path} holds no checkpoint yet")
        path = found
    meta = path / "meta.json"
    if meta.is_file():
        try:
            info = json.loads(meta.read_text())
        except ValueError as exc:
            raise EvalInputError(f"--model: {meta}: not JSON ({exc})") from None
        if not isinstance(info, dict):
            raise EvalInputError(f"--model: {meta}: expected an object (a checkpoint's meta), got {type(info).__name__}")
        run_id = info.get("run_id") or (info.get("config") or {}).get("run_id")
        if run_id is not None and "step" in info:
            return {"run_id": run_id, "step": info["step"]}
    weights = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))
    if not weights:
        raise EvalInputError(f"--model: {path} holds no weight file (*.safetensors, *.bin, *.pt)")
    return {"weights": {p.name: _sha256(p) for p in weights}}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def check_identity(out: Path, identity: dict) -> None:
    """Write OUT/eval.json on a first run; on a resume refuse (naming each key) when it differs. A folder with
    predictions but no record of what made them is refused too; one without predictions takes the new record."""
    path = out / IDENTITY
    predictions = out / PREDICTIONS
    if not path.exists() and predictions.exists() and predictions.stat().st_size:
        raise EvalInputError(f"{predictions} exists but {path} does not: nothing says which model, mode, budget, "
                             "style and tiles produced it; use another --out, or delete it")
    if path.exists():
        try:
            saved = json.loads(path.read_text())
        except ValueError as exc:
            raise EvalInputError(f"{path}: not JSON ({exc}); it records what produced {out}") from None
        keys = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
        if keys and predictions.exists() and predictions.stat().st_size:
            diff = "; ".join(f"{k}: {saved.get(k)!r} there, {identity.get(k)!r} now" for k in keys)
            raise EvalInputError(f"{out} holds predictions of another evaluation ({diff}); use another --out, "
                                 "or delete its predictions.jsonl and eval.json")
        if not keys:
            return
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{IDENTITY}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(identity, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def evaluate(generator, data: Sequence[str], out: str | Path, *, strides: Sequence[int | str] = ("default",),
             mode: str = "generate", data_format: str = "wds", images_root: str | None = None, limit: int | None = None,
             max_new_tokens: int | None = None, style: str = "official", template: str = "internlm2-chat",
             max_tiles: int | None = None, identity: dict | None = None, progress: bool = True) -> Path:
    """Predict every (item, stride) not yet in OUT/predictions.jsonl; return that file's path.

    `template` and `max_tiles` apply to MM-NIAH inputs (None: the style's default, `default_max_tiles`);
    `identity` is the model's (`model_identity`), recorded with the run's settings in OUT/eval.json."""
    from tqdm import tqdm

    if mode not in MODES:
        raise ValueError(f"--mode: choose one of {list(MODES)}, got {mode!r}")
    out = Path(out)
    tiles = max_tiles if max_tiles is not None else default_max_tiles(style, mode)
    check_identity(out, {"model": identity, "mode": mode, "max_new_tokens": max_new_tokens, "style": style,
                         "max_tiles": tiles, "template": template})
    pred_path = out / PREDICTIONS
    done = read_done(pred_path)
    items = iter_items(data, data_format=data_format, images_root=images_root, style=style,
                       **accounting(generator.tokenizer, template, tiles))
    bar = tqdm(total=limit, unit="item", disable=not progress, desc=f"eval ({mode})")
    with open(pred_path, "a", encoding="utf-8") as fh:
        for n, item in enumerate(items):
            if limit is not None and n >= limit:
                break
            todo = [s for s in strides if (item.id, str(s)) not in done]
            if todo:
                record = item.record
                if style == "v2pe" and item.task == "milebench":
                    record = retile(record, MILEBENCH_V2PE_TILES, generator.tokenizer)
                prompt = generator.prepare(record, item.load_images())
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


def default_max_tiles(style: str, mode: str = "generate") -> int:
    """Tiles per image of an MM-NIAH input when --max-tiles is not given: MM-NIAH's `eval_internvl.py` uses one
    448 px image (no dynamic tiling); V2PE's `eval_mm_niah.py` up to 5 tiles, its long (teacher-forced)
    `eval_mm_niah_long.py` up to 12."""
    if style not in tasks.STYLES:
        raise ValueError(f"--style: choose one of {list(tasks.STYLES)}, got {style!r}")
    if style == "official":
        return 1
    return 12 if mode == "teacher_forced" else 5


def _answer_file(path: Path, first: bytes | None) -> tuple[str, str, str] | None:
    """(model, task, split) when `path` is an MM-NIAH answer file: named <model>_<task>.jsonl and its first
    line has question_id and response."""
    try:
        row = json.loads(first) if first else None
    except ValueError:
        row = None
    if not mr.is_answer_line(row):
        return None
    try:
        return mr.parse_name(path)
    except mr.AnswerFileError as exc:
        raise EvalInputError(str(exc)) from None


def _read_row(raw: bytes, where: str, answers: tuple | None, problems: Problems) -> dict | None:
    try:
        row = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        problems.malformed.append(f"{where}: not JSON ({exc})")
        return None
    key = "question_id" if answers else "id"
    if not isinstance(row, dict) or key not in row:
        problems.malformed.append(f"{where}: expected an object with {key!r}")
        return None
    text = row.get("response" if answers else "prediction")
    if not isinstance(text, str):
        problems.malformed.append(f"{where}: {'response' if answers else 'prediction'} is "
                                  f"{type(text).__name__}, not text")
        return None
    if "correct" in row and not isinstance(row["correct"], bool):
        problems.malformed.append(f"{where}: correct is {row['correct']!r}; it must be true, false or absent")
        return None
    if answers:
        missing = [k for k in mr.ANSWER_FIELDS if k not in row]
        if missing:
            problems.malformed.append(f"{where}: missing {', '.join(missing)}")
            return None
        model, task, split = answers
        return {**row, "id": mr.item_id(task, row["question_id"]), "prediction": text, "stride": row.get("stride", "default"),
                "mmniah": {"group": model, "task": task, "split": split}}
    return {**row, "id": str(row["id"]), "prediction": text}


def read_predictions(paths: Iterable[str | Path], problems: Problems) -> dict[tuple[str, str], dict]:
    """(id, stride) -> row from our predictions files or MM-NIAH answer files; problems noted, not raised."""
    rows: dict[tuple[str, str], dict] = {}
    for path in map(Path, paths):
        try:
            lines = path.read_bytes().splitlines()
        except OSError as exc:
            raise EvalInputError(f"{path}: cannot read: {exc.strerror or exc}") from None
        answers = _answer_file(path, next((x for x in lines if x.strip()), None))
        for lineno, raw in enumerate(lines, 1):
            where = f"{path.name}:{lineno}"
            if not raw.strip():
                continue
            row = _read_row(raw, where, answers, problems)
            if row is None:
                continue
            key = (row["id"], str(row.get("stride", "default")))
            if key in rows:
                problems.duplicated.append(f"{where}: {row['id']} @ stride {key[1]} (first in {rows[key]['_where']})")
                continue
            rows[key] = {**row, "_where": where}
    return rows


def accounting(tokenizer, template: str, max_tiles: int) -> dict:
    """How MM-NIAH lines are counted and tiled (our records say it themselves)."""
    from v2pe_common.template import get_template
    from v2pe_common.tiling import TilingConfig

    return {"tokenizer": tokenizer, "template": get_template(template), "tiling": TilingConfig(max_tiles=max_tiles)}


def _value(row: dict, score) -> float:
    """A line's score: its `correct` when it has one (teacher forcing decided it), else the reply's."""
    return float(row["correct"]) if "correct" in row else score(row["prediction"])


def _mmniah_fields(row: dict, item: EvalItem | None) -> dict:
    """What MM-NIAH's own aggregation groups by: the answer file's model, task and split, or, for our eval of
    an MM-NIAH folder, the stride, the annotation file's task and the split its folder name says."""
    if "mmniah" in row:
        m = row["mmniah"]
        return {"group": m["group"], "mmniah_task": m["task"], "mmniah_split": m["split"]}
    split = item.mmniah_split if item is not None else ""
    return {"group": f"stride {row['stride']}", "mmniah_task": item.subset, "mmniah_split": split or "all"}


def score_answer_files(preds: dict[tuple[str, str], dict], style: str, problems: Problems) -> list[dict]:
    """MM-NIAH answer files scored from their own lines (answer, context_length, placed_depth), as MM-NIAH's
    `calculate_scores.py` does: no annotation file is needed."""
    ours = sorted({row["_where"].rsplit(":", 1)[0] for row in preds.values() if "mmniah" not in row})
    if ours:
        raise EvalInputError(f"{', '.join(ours)}: predictions of `v2pe-train eval` are scored against their inputs: "
                             "give them with --data (only MM-NIAH answer files score alone)")
    scored = []
    for (rid, stride), row in preds.items():
        task = mr.base_task(row["mmniah"]["task"])
        line = {"id": row["question_id"], "images_list": [], "answer": row["answer"]}
        try:
            entry = tasks.lookup(line, style=style, mmniah_task=task)
            value = _value(row, entry.score)
            depth = mr.depth_value(row["placed_depth"])
            tokens = row["context_length"]
            if isinstance(tokens, bool) or not isinstance(tokens, int):
                raise ValueError(f"context_length: expected an int, got {tokens!r}")
        except ValueError as exc:
            problems.malformed.append(f"{row['_where']}: {exc}")
            continue
        scored.append({"id": rid, "task": "mm_niah", "subset": task, "num_tokens": tokens, "depth": depth,
                       "stride": stride, "score": value, "prediction": row["prediction"],
                       **_mmniah_fields(row, None)})
    return scored


def score_predictions(paths: Sequence[str | Path], data: Sequence[str], *, data_format: str = "wds",
                      tokenizer=None, template: str = "internlm2-chat", max_tiles: int | None = None,
                      images_root: str | None = None, style: str = "official",
                      limit: int | None = None) -> tuple[list[dict], Problems]:
    """Score every prediction against its item's answer; report what cannot be scored. With `limit`, only the
    first `limit` items of the inputs are expected (what `eval --limit` evaluated)."""
    from v2pe_common.tokenizer import load_tokenizer

    problems = Problems()
    preds = read_predictions(paths, problems)
    if not data:
        return score_answer_files(preds, style, problems), problems
    acc = accounting(tokenizer if tokenizer is not None else load_tokenizer(None), template,
                     max_tiles if max_tiles is not None else default_max_tiles(style))
    strides = sorted({k[1] for k in preds}) or ["default"]
    scored: list[dict] = []
    seen: set[str] = set()
    for n, item in enumerate(iter_items(data, data_format=data_format, images_root=images_root, style=style,
                                        images=False, **acc)):
        if limit is not None and n >= limit:
            break
        seen.add(item.id)
        for stride in strides:
            row = preds.get((item.id, stride))
            if row is None:
                problems.missing.append(f"{item.id} @ stride {stride}")
                continue
            try:
                value = _value(row, item.score)
            except ValueError as exc:
                problems.malformed.append(f"{row['_where']}: {exc}")
                continue
            extra = _mmniah_fields(row, item) if item.task == "mm_niah" else {}
            scored.append({"id": item.id, "task": item.task, "subset": item.subset, "num_tokens": item.num_tokens,
                           "depth": item.depth, "stride": stride, "score": value, "prediction": row["prediction"],
                           **extra})
    if limit is None:
        problems.unknown.extend(sorted({k[0] for k in preds} - seen))
    return scored, problems
