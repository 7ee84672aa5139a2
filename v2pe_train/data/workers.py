"""The loader in torch's terms: `LoaderDataset` (a `PackedLoader` per worker process) and `TrainDataLoader`,
what the training loop iterates, with the resumable state of every worker."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from v2pe_common.tokenizer import TextTokenizer, load_tokenizer

from .collate import Batch
from .loader import LoaderConfig, PackedLoader
from .stats import LoaderStats


class LoaderDataset(torch.utils.data.IterableDataset):
    """`PackedLoader` as a torch IterableDataset; use with `DataLoader(ds, batch_size=None)`.

    With workers, worker w of n reads as data-parallel rank `dp_rank * n + w'` of `dp_size * n`, where
    w' = (w + first_worker) % n is its logical id (a resumed run rotates the ids so that torch's
    round-robin starts with the worker whose batch comes next). Each batch carries its worker's
    loader state (`batch.state`, `batch.worker`); `TrainDataLoader` collects them.
    """

    def __init__(self, config: LoaderConfig, tokenizer: TextTokenizer | str | None = None,
                 worker_states: dict[int, dict] | None = None, first_worker: int = 0):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.worker_states = worker_states or {}
        self.first_worker = first_worker

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        if info is None:
            n, logical, cfg = 1, 0, self.config
        else:
            n = info.num_workers
            logical = (info.id + self.first_worker) % n
            cfg = self.config.model_copy(update={"dp_rank": self.config.dp_rank * n + logical,
                                                 "dp_size": self.config.dp_size * n})
        loader = PackedLoader(cfg, self.tokenizer)
        if logical in self.worker_states:
            loader.load_state_dict(self.worker_states[logical])
        for batch in loader:
            batch.state = loader.state_dict()
            batch.worker = logical
            yield batch


class TrainDataLoader:
    """What the training loop iterates: batches, plus `state_dict()` / `load_state_dict()` and `stats`.

    `num_workers=0` reads in the calling process. With workers, each reads its own slice (see
    `LoaderDataset`), decoding in parallel; the saved state is every worker's position after the last
    batch this object handed out, so batches prefetched but not consumed are produced again after a
    resume. The data order depends on `num_workers`; resume with the same value. Exact resume with
    workers holds while no worker runs out of data (endless epochs, as a step-based loop uses).
    """

    def __init__(self, config: LoaderConfig, tokenizer: TextTokenizer | str | None = None, *,
                 num_workers: int = 0, prefetch_factor: int = 2, pin_memory: bool = False):
        self.config = config
        self.tokenizer = tokenizer if isinstance(tokenizer, TextTokenizer) else load_tokenizer(tokenizer)
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self._loader = PackedLoader(config, self.tokenizer) if num_workers == 0 else None
        self._worker_states: dict[int, dict] = {}
        self._next_worker = 0

    def __iter__(self) -> Iterator[Batch]:
        if self._loader is not None:
            for batch in self._loader:
                if self.pin_memory and torch.cuda.is_available():
                    batch = batch.pin_memory()
                yield batch
            return
        ds = LoaderDataset(self.config, self.tokenizer, dict(self._worker_states), self._next_worker)
        dl = torch.utils.data.DataLoader(
            ds, batch_size=None, num_workers=self.num_workers, prefetch_factor=self.prefetch_factor,
            pin_memory=self.pin_memory and torch.cuda.is_available(), persistent_workers=False,
        )
        for batch in dl:
            self._worker_states[batch.worker] = batch.state
            self._next_worker = (batch.worker + 1) % self.num_workers
            batch.state = None
            yield batch

    @property
    def stats(self) -> LoaderStats:
        if self._loader is not None:
            return self._loader.stats
        total = LoaderStats()
        for st in self._worker_states.values():
            s = st["stats"]
            for k, v in s["counts"].items():
                total.counts[k] = total.counts.get(k, 0) + v
            for k, v in s["examples"].items():
                total.examples.setdefault(k, []).extend(v)
            total.samples += s["samples"]
            total.packs += s["packs"]
            total.tokens += s["tokens"]
        return total

    def state_dict(self) -> dict:
        if self._loader is not None:
            return {"num_workers": 0, "loader": self._loader.state_dict()}
        return {"num_workers": self.num_workers, "next_worker": self._next_worker,
                "workers": {str(k): v for k, v in self._worker_states.items()}}

    def load_state_dict(self, state: dict) -> None:
        if int(state.get("num_workers", -1)) != self.num_workers:
            raise ValueError(f"loader state was saved with num_workers={state.get('num_workers')}, now {self.num_workers}: "
                             "the data split depends on it")
        if self._loader is not None:
            self._loader.load_state_dict(state["loader"])
        else:
            self._worker_states = {int(k): v for k, v in state["workers"].items()}
            self._next_worker = int(state["next_worker"])
