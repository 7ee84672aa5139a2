"""`MileBenchTask`: MileBench's task folders as training records, one record per valid, in-bin row.

At open every selected task's JSON is read and each row checked (`reader`); each valid row is rendered
(`prompt`) and counted exactly with `Accounting.count`. A MileBench sample is fixed text and images: it
cannot be re-planned into a bin as generated samples are, so a row whose count falls outside
[min_len, len] is skipped and counted as `out_of_bin`. Sample i of the build is the i-th in-bin row in task
order (the `tasks` option's order), then file order: the same folders give the same records, for any seed
and any number of workers. `num_samples` takes the first N in-bin rows; asking for more than there are is a
usage error that names how many there are. A task folder (or its JSON) that is missing is reported as
unavailable and skipped, unless the build is strict; a damaged JSON file, or no available task, is a
usage error. MileBench's `<Task>-adv.json` variants are not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from v2pe_common.encoding import TokenCount
from v2pe_common.recipe import ConfigError

from ...plan import Accounting, Budget, PlanError, SamplePlan, sample_record
from ...sources.base import SourceError
from ...sources.registry import ExplainedLoads
from ..base import Input, control_of
from .options import MileBenchOptions
from .reader import BENCHMARK, Row, TaskSource, key_part, read_task, task_file

TASK = "milebench"


@dataclass(frozen=True, slots=True)
class Sample:
    source: int  # index into MileBenchTask.sources
    row: Row
    tiles: tuple[int, ...]
    text_tokens: int
    image_tokens: int


def record_id(task: str, sample_id: str) -> str:
    """A shard key from MileBench's task and sample id (characters a key cannot hold become '_')."""
    return f"milebench-{key_part(task)}-{key_part(sample_id)}"


def task_names(root: Path) -> list[str]:
    """Every folder of `root` holding `<Task>/<Task>.json`, sorted by name."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / f"{p.name}.json").is_file())


class MileBenchTask:
    name = TASK

    def __init__(self, options: MileBenchOptions, *, split: str, seed: int, budget: Budget, acc: Accounting,
                 num_samples: int, strict: bool = False, control=None):
        self.options, self.split, self.seed, self.budget, self.acc = options, split, seed, budget, acc
        self.num_samples = num_samples
        root = Path(options.path).expanduser()
        if not root.is_dir():
            raise ConfigError(f"path: {root} is not a folder (the MileBench root, holding <Task>/<Task>.json)")
        names = list(options.tasks) or task_names(root)
        if not names:
            raise ConfigError(f"path: {root} holds no MileBench task folder (<Task>/<Task>.json)")
        self.inputs: list[Input] = []
        self.sources: list[TaskSource] = []
        self.samples: list[Sample] = []
        for name in names:
            entry = {"name": name, "kind": TASK, "path": str(root / name)}
            file = task_file(root, name, options.combined)
            if not file.is_file():
                why = f"no {file}"
                if strict:
                    raise ConfigError(f"milebench task {name!r}: {why} (--strict)")
                self.inputs.append(Input(entry, None, f"unavailable: {why}"))
                continue
            try:
                source = read_task(root, name, split=split, combined=options.combined, strict=strict,
                                   max_pixels=options.max_pixels, control=control)
            except SourceError as exc:
                raise ConfigError(str(exc)) from None
            self._admit(source)
            self.inputs.append(Input(entry, source, "available"))
        if not self.sources:
            raise ConfigError("no MileBench task is available: " + "; ".join(i.status for i in self.inputs))
        self._check_ids()

    def _check_ids(self) -> None:
        """Record ids are keys: two rows of different tasks that map to one id ("T.1" and "T_1" both become
        T_1) would overwrite each other in every format. Refused, naming both."""
        owner: dict[str, str] = {}
        for s in self.samples:
            row, task = s.row, self.sources[s.source].name
            rid = record_id(task, row.sample_id)
            where = f"{task}:{row.sample_id} ({row.where})"
            if owner.setdefault(rid, where) != where:
                raise ConfigError(f"milebench: {where} and {owner[rid]} both become record id {rid!r}; rename one "
                                  "task folder or build the tasks separately")

    def _admit(self, source: TaskSource) -> None:
        """Count each valid row; keep those in the bin, record the others as out_of_bin."""
        index = len(self.sources)
        self.sources.append(source)
        images = ExplainedLoads(source, f"MileBench/{source.name}")
        for row in source.rows:
            tiles = tuple(self.acc.tiles(images.item(k)) for k in row.images)
            counted = self.acc.count(_conversation(row), tiles)
            if not self.budget.contains(counted.total):
                source.reject(row.sample_id, "out_of_bin", f"{counted.total} tokens, outside the bin "
                              f"[{self.budget.min_len}, {self.budget.max_len}]", row.where, strict=False)
                continue
            source.in_bin += 1
            self.samples.append(Sample(index, row, tiles, counted.text, counted.image))

    # -- the Task protocol

    @classmethod
    def open(cls, cfg, acc: Accounting) -> MileBenchTask:
        if not cfg.sources_untouched():
            raise ConfigError("milebench reads the MileBench folders of options.path (--option path=...), not "
                              "sources/--source/--mode")
        if cfg.depth is not None:
            raise ConfigError("depth: milebench samples are MileBench's own; there is no depth to set")
        options = MileBenchOptions.from_dict(cfg.options, where="options")
        return cls(options, split=cfg.split, seed=cfg.seed, budget=Budget(cfg.min_length, cfg.length), acc=acc,
                   num_samples=cfg.num_samples, strict=cfg.strict, control=control_of(cfg, acc))

    def check_feasible(self, min_len: int, max_len: int) -> None:
        if len(self.samples) >= self.num_samples:
            return
        skipped = sum(len(s.rejected) for s in self.sources)
        names = [s.name for s in self.sources]
        if not self.samples:
            reasons: dict[str, int] = {}
            for s in self.sources:
                for row in s.rejected:
                    reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
            why = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])) or "none"
            hint = "widen the bin with --len/--min-len" if "out_of_bin" in reasons else "see each row with --strict"
            raise ConfigError(f"no MileBench sample of {names} can be built in [{min_len}, {max_len}] tokens: "
                              f"{skipped} rows skipped ({why}); {hint}")
        raise ConfigError(f"--num-samples {self.num_samples}: only {len(self.samples)} MileBench samples of {names} "
                          f"fall in [{min_len}, {max_len}] tokens ({skipped} rows skipped); use --num-samples "
                          f"{len(self.samples)} or fewer, or widen the bin")

    def plan(self, index: int) -> SamplePlan:
        if not 0 <= index < len(self.samples):
            raise PlanError(f"milebench sample {index}: only {len(self.samples)} samples fall in the bin")
        s = self.samples[index]
        source = self.sources[s.source]
        images = ExplainedLoads(source, f"MileBench/{source.name}")
        items = [images.item(k) for k in s.row.images]
        row = s.row
        record = sample_record(
            id=record_id(source.name, row.sample_id), task=TASK, subset=source.name, items=items,
            conversations=_conversation(row), answer=row.response, seed=self.seed, index=index, split=self.split,
            mode=TASK, budget=self.budget, acc=self.acc, tiles=s.tiles,
            counted=TokenCount(s.text_tokens, s.image_tokens),
            sources=[{**it.provenance("context"), "benchmark": BENCHMARK} for it in items],
            eval_benchmark=BENCHMARK, question_type=row.question_type, choices=row.choices, sample_id=row.sample_id,
            milebench_task=source.name, source_file=row.where, combined=self.options.combined, **row.extra)
        return SamplePlan(record=record, items=items, rejected={})


def _conversation(row: Row) -> list[dict]:
    return [{"from": "human", "value": row.human}, {"from": "gpt", "value": row.gpt}]
