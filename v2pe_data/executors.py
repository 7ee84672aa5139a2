"""How a build's shard tasks run: forked local workers that report a lost worker, or Ray tasks on a cluster.

Both call the builder's `run_task(task, progress)` on whole shard tasks, so the output never depends on the
executor: finished tasks leave their markers, and a rerun after any failure does only the rest. The builder is
whatever object has that method (and, for Ray, a class made from a `cfg`): executors never import the builder.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import queue
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from v2pe_common.buildfolder import unlock

from .config import BuildConfig
from .errors import BuildError
from .shardtasks import ShardTask


# Worker processes inherit the builder through fork; only task indices cross the process boundary.
_WORKER: dict = {}


def _worker_init(builder, messages, lock_fds: tuple[int, ...]) -> None:
    # Only the parent holds the output lock: a worker orphaned by a killed parent must not keep the folder
    # locked. Closing this copy of the descriptor leaves the parent's lock in place (flock is per open file).
    unlock(lock_fds)
    _WORKER["builder"] = builder
    _WORKER["messages"] = messages


def _worker_run(task: ShardTask) -> dict:
    messages = _WORKER["messages"]
    messages.put(("start", os.getpid(), task.index))  # so a worker's death can be pinned on its task
    return _WORKER["builder"].run_task(task, progress=lambda s, t: messages.put(("progress", s, t)))


def run_parallel(builder, todo: list[ShardTask], workers: int, progress, lock_fds: tuple[int, ...]) -> None:
    """Run tasks on `workers` forked processes; a worker that dies (SIGKILL, the OOM killer) stops the build.

    The executor notices a dead worker at once and stops the others; the BuildError names the task the
    dead worker was writing. Finished tasks keep their markers, so a rerun does only the rest.
    """
    ctx = mp.get_context("fork")
    messages = ctx.Queue()
    writing: dict[int, int] = {}  # worker pid -> index of the task it started last
    finished: set[int] = set()

    def drain(timeout: float | None = None) -> None:
        try:
            while True:
                kind, a, b = messages.get(timeout=timeout) if timeout else messages.get_nowait()
                timeout = None
                if kind == "start":
                    writing[a] = b
                else:
                    progress(a, b)
        except queue.Empty:
            pass

    before = set(mp.active_children())
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(builder, messages, lock_fds))
    futures: dict = {}
    procs: list = []
    try:
        try:
            for t in todo:
                futures[pool.submit(_worker_run, t)] = t
            procs = [p for p in mp.active_children() if p not in before]  # forked by the first submit
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                drain()
                for f in done:
                    f.result()  # re-raises a worker's exception here
                    finished.add(futures[f].index)
        finally:
            for f in futures:
                f.cancel()  # tasks not started yet (shutdown(wait=False) would drop the handle that joins)
            while not all(f.done() for f in futures):  # running tasks end; keep reading their messages
                drain(timeout=0.1)
            pool.shutdown(wait=True)  # joins the workers: their exit codes are known from here on
            drain()
    except BrokenProcessPool:
        finished |= {t.index for f, t in futures.items() if not f.cancelled() and f.exception() is None}
        raise BuildError(_lost_worker(procs, writing, finished, todo)) from None


def _lost_worker(procs: list, writing: dict[int, int], finished: set[int], todo: list[ShardTask]) -> str:
    """The line for a worker that died: which process, how, and the shard task it was writing."""
    rest = (f"the other workers were stopped; rerun the same command to finish the {len(todo) - len(finished)} "
            "unfinished task(s)")
    # The executor stops the surviving workers with SIGTERM; the lost one died otherwise.
    for p in (p for p in procs if p.exitcode not in (None, 0, -signal.SIGTERM)):
        how = (f"was killed by {signal.Signals(-p.exitcode).name}" if p.exitcode < 0
               else f"exited with status {p.exitcode}")
        if p.exitcode == -signal.SIGKILL:
            how += " (the out-of-memory killer sends it)"
        t = next((t for t in todo if t.index == writing.get(p.pid) and t.index not in finished), None)
        samples = f"sample {t.start}" if t and t.stop - t.start == 1 else f"samples {t.start}-{t.stop - 1}" if t else ""
        what = f"while writing shard task {t.index} ({samples})" if t else "between shard tasks"
        return f"worker process {p.pid} {how} {what}; {rest}"
    started = sorted(i for i in writing.values() if i not in finished)
    return f"a worker process died while shard task(s) {started} were being written; {rest}"


# Ray workers build their own builder from the config (a tokenizer and open sources do not pickle well);
# one per worker process, reused across the tasks it runs.
_RAY_BUILDERS: dict = {}


def _ray_task(make_builder, cfg: BuildConfig, task: ShardTask) -> dict:
    key = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
    if key not in _RAY_BUILDERS:
        _RAY_BUILDERS[key] = make_builder(cfg)
    return _RAY_BUILDERS[key].run_task(task)


def import_ray():
    try:
        import ray
    except ImportError:
        raise BuildError("--executor ray needs Ray: pip install 'v2pe[ray]' (or use the local executor)",
                         usage=True) from None
    return ray


def run_ray(builder, todo: list[ShardTask], progress) -> None:
    """Run tasks as Ray tasks on the cluster of RAY_ADDRESS (or a local one); OUT must be shared by all nodes.

    A failed task raises its BuildError line here; finished tasks keep their markers, so a rerun does the rest.
    """
    ray = import_ray()
    started = not ray.is_initialized()  # a caller's own Ray session is left as it was
    if started:
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)
    try:
        _wait_ray(ray, builder, todo, progress)
    finally:
        if started:
            ray.shutdown()


def _wait_ray(ray, builder, todo: list[ShardTask], progress) -> None:
    remote = ray.remote(max_retries=0)(_ray_task)
    cfg = dataclasses.replace(builder.cfg, workers=1, executor="local")
    pending = {remote.remote(type(builder), cfg, t): t for t in todo}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        task = pending.pop(done[0])
        try:
            marker = ray.get(done[0])
        except ray.exceptions.RayError as exc:  # a task's exception, or its worker or node lost
            for ref in pending:
                ray.cancel(ref)
            cause = getattr(exc, "cause", None) or exc
            why = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            raise BuildError(f"ray task for shard task {task.index} failed: {why}; finished tasks are kept, "
                             "rerun the same command to finish the rest") from None
        progress(task.stop - task.start, sum(row[0] for row in marker["tokens"]))
