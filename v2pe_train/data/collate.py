"""A pack of samples -> one batch row: concatenated ids, labels, restarting positions, all tiles in order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from .samples import Sample


@dataclass
class Batch:
    """One packed sequence (batch size 1). Samples never attend to each other: use `cu_seqlens`.

    `labels` are NOT shifted (the model / loss shifts). `position_ids` restart at 0 for each sample and
    are float64 (V2PE visual positions are fractional). `pixel_values` hold every tile of the pack in
    sequence order, so the i-th block of 256 `<IMG_CONTEXT>` tokens is tile i; or, on a context-parallel
    rank, only tiles `tile_range` = [start, stop) of them (the rank's share, see LoaderConfig.cp_size).
    """

    input_ids: torch.Tensor  # int64 [1, L]
    labels: torch.Tensor  # int64 [1, L], -100 where unsupervised
    position_ids: torch.Tensor  # float64 [1, L]
    pixel_values: torch.Tensor  # [T, 3, 448, 448] (bf16 by default), T = sum(image_tiles)
    image_tiles: torch.Tensor  # int64 [num_images]: tiles per image (thumbnail included), sequence order
    sample_lengths: torch.Tensor  # int64 [n]
    cu_seqlens: torch.Tensor  # int32 [n + 1]: 0, l0, l0+l1, ..., L
    num_supervised: torch.Tensor  # int64 [n]: supervised tokens per sample (for the `square` loss weights)
    ids: list[str]  # sample ids, in sequence order
    num_tokens: int  # L
    state: dict | None = field(default=None, repr=False)  # loader state after this batch (worker mode)
    worker: int | None = None  # logical worker id that made it (worker mode)
    tile_range: tuple[int, int] | None = None  # rows of the pack's tiles `pixel_values` holds; None: all
    where: list[str] = field(default_factory=list)  # 'shard:sample id' per sample, set by the loader

    @property
    def total_tiles(self) -> int:
        """Tiles of the whole pack, also where `pixel_values` holds only a rank's share."""
        return int(self.image_tiles.sum())

    @property
    def num_samples(self) -> int:
        return len(self.ids)

    @property
    def num_tiles(self) -> int:
        """Tiles held here (`total_tiles` for the pack's)."""
        return int(self.pixel_values.shape[0])

    def _map(self, fn) -> Batch:
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in kw.items():
            if isinstance(v, torch.Tensor):
                kw[k] = fn(v)
        return Batch(**kw)

    def to(self, device, non_blocking: bool = False) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:  # called by torch's DataLoader when pin_memory=True
        return self._map(lambda t: t.pin_memory())


def collate(pack: Sequence[Sample], *, pixel_values: torch.Tensor | None = None,
            tile_range: tuple[int, int] | None = None) -> Batch:
    """`pixel_values` (with the `tile_range` they cover) replaces the samples' tiles, e.g. a rank's share."""
    lengths = [s.length for s in pack]
    if pixel_values is not None:
        pixels = pixel_values
    elif len(pack) == 1:
        pixels = pack[0].pixel_values  # the usual case for long samples: no copy
    else:
        pixels = torch.cat([s.pixel_values for s in pack], dim=0)
    cu = np.zeros(len(pack) + 1, dtype=np.int32)
    np.cumsum(lengths, out=cu[1:])
    return Batch(
        input_ids=torch.from_numpy(np.concatenate([s.input_ids for s in pack])).unsqueeze(0),
        labels=torch.from_numpy(np.concatenate([s.labels for s in pack])).unsqueeze(0),
        position_ids=torch.from_numpy(np.concatenate([s.position_ids for s in pack])).unsqueeze(0),
        pixel_values=pixels,
        image_tiles=torch.tensor([t for s in pack for t in s.image_tiles], dtype=torch.int64),
        sample_lengths=torch.tensor(lengths, dtype=torch.int64),
        cu_seqlens=torch.from_numpy(cu),
        num_supervised=torch.tensor([s.num_supervised for s in pack], dtype=torch.int64),
        ids=[s.id for s in pack],
        num_tokens=int(sum(lengths)),
        tile_range=tile_range,
    )
