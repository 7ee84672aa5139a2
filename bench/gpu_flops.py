"""Throughput accounting of `make gpu-check`: bf16 peaks, FLOPs per token as torchtitan counts them, the
parameters that count, and torchtitan's published point that our figures are put beside."""

from __future__ import annotations

# Dense bf16 peak (no sparsity), FLOP/s, for the device name's first matching key: torchtitan's table
# (get_peak_flops in pytorch/torchtitan torchtitan/utils.py, commit 9fd2b51): H100 SXM 989, PCIe 756, NVL 835.
PEAK_BF16 = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200": 989e12}
# Beside our long-context figures: torchtitan's published context-parallel point, as issue 23 quotes it.
REFERENCE = {"what": "torchtitan, context parallel (issue 23's figure)", "model": "Llama 3.1 8B", "seq_len": 131072,
             "device": "H100", "tokens_per_s_per_gpu": 1071}


def peak_flops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k in device_name), None)


def torchtitan_flops_per_token(n_params: int, layers: int, heads: int, head_dim: int, seq_len: int) -> int:
    """Training FLOPs per token as torchtitan counts them for MFU: 6 * N + 12 * L * H * Q * T, N the parameters
    without the embedding table, L layers, H (query) heads, Q the head dim, T the sequence length: matmuls
    forward and backward; attention's recomputation and causal sparsity not counted. get_num_flop_per_token in
    pytorch/torchtitan torchtitan/utils.py (commit 9fd2b51); its newer torchtitan/models/utils.py writes the
    attention term per layer as 6 * H * (Q_qk + Q_v) * T, the same number when the two head dims are equal."""
    return 6 * n_params + 12 * layers * heads * head_dim * seq_len


def non_embedding_params(model) -> int:
    """Parameters less the input embedding tables (one the output head shares stays counted), as torchtitan's
    get_num_params(exclude_embedding=True); the vision tower and projector stay in N."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    shared = {id(p) for p in head.parameters()} if head is not None else set()
    tables = {id(p): p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding)
              for p in m.parameters(recurse=False) if id(p) not in shared}
    return sum(p.numel() for p in model.parameters()) - sum(tables.values())
