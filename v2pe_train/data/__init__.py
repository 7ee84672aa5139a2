"""The training loader: v2pe-data shards -> packed, tiled, tokenised batches with V2PE positions.

    from v2pe_train.data import LoaderConfig, TrainDataLoader
    loader = TrainDataLoader(LoaderConfig(paths=["out/long_vqa_32k"], format="wds", max_seq_len=32768,
                                          position_mode="v2pe_rnd", dp_rank=r, dp_size=n, num_epochs=None), tok)
    for batch in loader: ...          # Batch: input_ids, labels, position_ids, pixel_values, cu_seqlens, ...
    ckpt["data"] = loader.state_dict()  # exact resume: loader.load_state_dict(ckpt["data"])

Modules: shards (manifests and their sha256 checks; tar, parquet and InternVL JSONL streaming; epoch
order, dp split), mixture (several datasets interleaved by repeat_time or weight), samples (record ->
tokens, tiles, positions), foreign (InternVL lines without our meta, counted at load), packing, collate (the Batch), loader
(PackedLoader), workers (torch's Dataset and the training loop's loader), stats (bad-input counts).
"""

from .collate import Batch, collate
from .loader import LoaderConfig, PackedLoader
from .workers import LoaderDataset, TrainDataLoader
from .mixture import DatasetSpec
from .packing import Packer
from .samples import IMAGENET_MEAN, IMAGENET_STD, Sample, SampleProcessor, stride_rng
from .shards import ShardRef, resolve_sources
from .stats import REASONS, LoaderError, LoaderStats, SampleError

__all__ = [
    "Batch", "collate", "DatasetSpec", "LoaderConfig", "LoaderDataset", "PackedLoader", "TrainDataLoader", "Packer",
    "IMAGENET_MEAN", "IMAGENET_STD", "Sample", "SampleError", "SampleProcessor", "stride_rng",
    "ShardRef", "resolve_sources", "REASONS", "LoaderError", "LoaderStats",
]
