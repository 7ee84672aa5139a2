"""Tasks turn a sample index into a SamplePlan. A task is one module plus one entry here (see `base.Task`)."""

from __future__ import annotations


def _long_vqa():
    from .long_vqa import LongVQATask

    return LongVQATask


def _long_mr():
    from .long_mr import LongMRTask

    return LongMRTask


def _milebench():
    from .milebench import MileBenchTask

    return MileBenchTask


# name -> the task class (imported on first use, so a build pays only for its own task)
TASKS = {"long_vqa": _long_vqa, "long_mr": _long_mr, "milebench": _milebench}


def open_task(cfg, acc):
    """The task `cfg.task` names, opened on its inputs; raises ConfigError for what it cannot build."""
    return TASKS[cfg.task]().open(cfg, acc)
