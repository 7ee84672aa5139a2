"""Point-to-point ring communication for context parallelism.

`RingComm` posts "send my tensor to the next rank, receive the previous rank's
tensor" pairs and launches them together with `dist.batch_isend_irecv`, so a
caller can prefetch the next K/V block while it computes on the current one.

Works with gloo (CPU) and NCCL (CUDA).  Every op of one `commit()` must be
`wait()`-ed before the next `commit()`; misuse raises `RuntimeError`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["RingComm", "group_rank_world"]


def group_rank_world(group: dist.ProcessGroup | None) -> tuple[int, int]:
    """(rank, world) of this process inside `group`.

    `group=None` means the default (world) group when torch.distributed is
    initialised, and a single-process "group" (0, 1) when it is not, so the
    same code path runs in a plain single-process script.
    """
    if group is None and not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


class RingComm:
    """Send to rank+1 / receive from rank-1 (ranks inside `group`).

    `tag_base` separates two rings that are in flight at the same time between
    the same pair of processes (gloo matches messages by tag; NCCL ignores it).
    """

    def __init__(self, group: dist.ProcessGroup | None, tag_base: int = 0):
        self.group = group
        self.rank, self.world = group_rank_world(group)
        if self.world > 1:
            to_global = (lambda r: r) if group is None else (lambda r: dist.get_global_rank(group, r))
            self.next_rank = to_global((self.rank + 1) % self.world)
            self.prev_rank = to_global((self.rank - 1) % self.world)
        self.tag_base = tag_base
        self._ops: list[dist.P2POp] = []
        self._reqs: list | None = None

    def send_recv(self, to_send: torch.Tensor, recv_buf: torch.Tensor | None = None) -> torch.Tensor:
        """Queue one send of `to_send` and one receive of a same-shaped tensor.

        Returns the receive buffer; its contents are valid after `wait()`.
        """
        if self.world == 1:
            raise RuntimeError("RingComm.send_recv called in a group of one process")
        if self._reqs is not None:
            raise RuntimeError("RingComm.send_recv called while a previous commit is in flight; wait() first")
        if not to_send.is_contiguous():
            raise RuntimeError("RingComm.send_recv needs a contiguous tensor")
        if recv_buf is None:
            recv_buf = torch.empty_like(to_send)
        tag = self.tag_base + len(self._ops) // 2
        self._ops.append(dist.P2POp(dist.isend, to_send, self.next_rank, self.group, tag))
        self._ops.append(dist.P2POp(dist.irecv, recv_buf, self.prev_rank, self.group, tag))
        return recv_buf

    def commit(self) -> None:
        if not self._ops:
            raise RuntimeError("RingComm.commit called with nothing queued")
        if self._reqs is not None:
            raise RuntimeError("RingComm.commit called twice without wait()")
        self._reqs = dist.batch_isend_irecv(self._ops)

    def wait(self) -> None:
        if self._reqs is None:
            raise RuntimeError("RingComm.wait called without commit()")
        for req in self._reqs:
            req.wait()
        self._reqs = None
        self._ops = []
