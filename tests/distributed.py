"""Run a function in N gloo processes (CPU) and propagate failures to pytest.

    def _check(rank, world, group, *args): ...     # module-level (picklable)
    results = run_distributed(_check, world=2, args=(...,))

Each worker process: initialises torch.distributed (gloo, tcp on a free
localhost port, `timeout` seconds), sets 1 intra-op thread, calls
`fn(rank, world, group, *args)` with `group` = the world group, and returns its
result (must be picklable) to the parent.  A worker exception or a hang is
re-raised in the parent as `DistributedTestError` carrying every failing
rank's traceback; the remaining workers are terminated.
"""

from __future__ import annotations

import io
import os
import queue
import socket
import time
import traceback
from datetime import timedelta

import torch
import torch.multiprocessing as mp

__all__ = ["DistributedTestError", "free_port", "run_distributed"]


class DistributedTestError(AssertionError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, fn, args, timeout, results):
    try:
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=timeout),
        )
        try:
            out = fn(rank, world, dist.group.WORLD, *args)
            dist.barrier()
        finally:
            dist.destroy_process_group()
        buf = io.BytesIO()  # plain bytes: torch's queue pickler would share tensor memory via
        torch.save(out, buf)  # fds that die with this process before the parent reads them
        results.put((rank, True, buf.getvalue()))
    except BaseException:  # noqa: BLE001 - everything goes back to the parent
        results.put((rank, False, traceback.format_exc()))


def run_distributed(fn, world: int, args: tuple = (), timeout: float = 90.0) -> list:
    """Run `fn(rank, world, group, *args)` in `world` gloo processes; return results by rank."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_worker, args=(r, world, port, fn, args, timeout, results), daemon=True)
        for r in range(world)
    ]
    for p in procs:
        p.start()
    got: dict[int, object] = {}
    errors: dict[int, str] = {}
    deadline = time.monotonic() + timeout + 30  # + process start-up
    try:
        while len(got) + len(errors) < world:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(set(range(world)) - set(got) - set(errors))
                why = "terminated after another rank failed" if errors else "timed out (hang or deadlock?)"
                errors.update({r: why for r in missing})
                break
            try:
                rank, ok, payload = results.get(timeout=min(left, 1.0))
            except queue.Empty:
                dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0) and r not in got and r not in errors]
                for r in dead:
                    errors[r] = f"process exited with code {procs[r].exitcode} without reporting"
                continue
            if ok:
                got[rank] = torch.load(io.BytesIO(payload), weights_only=False)
            else:
                errors[rank] = payload
                # a failed rank usually leaves its peers blocked in a collective
                deadline = min(deadline, time.monotonic() + 10)
    finally:
        for p in procs:
            p.join(timeout=5 if not errors else 0.5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    if errors:
        msg = "\n".join(f"--- rank {r} ---\n{tb}" for r, tb in sorted(errors.items()))
        raise DistributedTestError(f"{len(errors)} of {world} ranks failed:\n{msg}")
    return [got[r] for r in range(world)]
