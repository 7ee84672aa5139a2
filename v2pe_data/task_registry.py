"""The task registry: a task is one package under `tasks/` plus one entry here (its contract: `tasks.base.Task`).

The config checks a task name against it; the builder opens the task it names. Nothing under `tasks/` imports
the config or this module, so the tasks sit below both.
"""

from __future__ import annotations


def _long_vqa():
    from .tasks.long_vqa import LongVQATask

    return LongVQATask


def _long_mr():
    from .tasks.long_mr import LongMRTask

    return LongMRTask


def _milebench():
    from .tasks.milebench import MileBenchTask

    return MileBenchTask


# name -> the task class (imported on first use, so a build pays only for its own task)
TASKS = {"long_vqa": _long_vqa, "long_mr": _long_mr, "milebench": _milebench}


def open_task(cfg, acc):
    """The task `cfg.task` names, opened on its inputs; raises ConfigError for what it cannot build."""
    return TASKS[cfg.task]().open(cfg, acc)
