"""One place that decides which attention kernels run, and why.

Used by the ring (every block of every step), by the cp = 1 varlen path (the
same `ring_attention` call with one rank) and by `train.attention_summary`, so
the log line and the kernels that run cannot disagree.

`choose_backend` is pure: device type, dtype, head dim and GPU capability come
in as values, so the rules are testable on a CPU machine.  Names it returns:

* "torch_flash": torch's own FlashAttention (`aten._flash_attention_forward` /
  `_backward`, `varlen_attn` for one rank).  CUDA, fp16/bf16, head dim <= 256
  and a multiple of 8, sm80+.  No extra package.
* "cuda_efficient": torch's memory-efficient SDPA kernel (any CUDA GPU, fp32 too).
* "cpu_flash": torch's CPU flash op.
* "math": explicit softmax; other devices and dtypes (fp64 on CUDA).
* "flash": ring-flash-attn / flash-attn (optional `[gpu]` extra), only when forced.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import torch

from ..errors import V2PETrainError
from .flash import SUPPORTED_DTYPES, flash_unavailable_reason

__all__ = ["BackendChoice", "RingConfigError", "choose_backend", "describe", "device_capability", "log_choice_once"]

logger = logging.getLogger(__name__)

REQUESTS = ("auto", "torch", "flash")
TORCH_FLASH_DTYPES = (torch.float16, torch.bfloat16)
TORCH_FLASH_MAX_HEAD_DIM = 256
TORCH_FLASH_MIN_CAPABILITY = (8, 0)
EFFICIENT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# the wording of `attention_summary`; "torch" alone stays the CPU default's historical name
LABELS = {"torch_flash": "torch flash", "cuda_efficient": "torch mem-efficient", "cpu_flash": "torch",
          "math": "torch math", "flash": "flash"}


class RingConfigError(V2PETrainError, ValueError):
    """A ring-attention call that cannot work as configured (message says how to fix it)."""

    reason = "ring_config"


class BackendChoice(NamedTuple):
    name: str  # a key of LABELS
    reason: str  # one line: why this kernel, naming what ruled out a faster one
    fallback: bool = False  # True when a faster torch kernel was ruled out by this case


def _device_type(device) -> str:
    return device if isinstance(device, str) else torch.device(device).type


def _torch_flash_obstacle(dtype, head_dim: int | None, capability: tuple[int, int] | None) -> str | None:
    """None when torch's flash kernels can serve this case, else why not."""
    if dtype not in TORCH_FLASH_DTYPES:
        return f"dtype {dtype} (torch flash needs fp16/bf16)"
    if head_dim is not None and (head_dim > TORCH_FLASH_MAX_HEAD_DIM or head_dim % 8):
        return f"head dim {head_dim} (torch flash needs <= {TORCH_FLASH_MAX_HEAD_DIM} and a multiple of 8)"
    if capability is None:
        return "GPU capability unknown (torch flash needs sm80+)"
    if tuple(capability) < TORCH_FLASH_MIN_CAPABILITY:
        return f"GPU sm{capability[0]}{capability[1]} (torch flash needs sm80+)"
    return None


def choose_backend(device, dtype: torch.dtype, head_dim: int | None, capability: tuple[int, int] | None,
                   requested: str = "auto", *, flash_check=flash_unavailable_reason) -> BackendChoice:
    """The kernel for this case: `requested` is "auto" | "torch" | "flash".

    `head_dim=None` means not known yet (checked again per call).  `flash_check(device)` says why
    ring-flash-attn cannot run there, or None (injectable so the rules are testable without a GPU).
    Raises RingConfigError, with one line naming why, when "flash" is forced and cannot run.
    """
    if requested not in REQUESTS:
        raise RingConfigError(f"backend must be one of {REQUESTS}, got {requested!r}")
    kind = _device_type(device)
    if requested == "flash":
        reason = flash_check(torch.device(kind))
        if reason is None and dtype not in SUPPORTED_DTYPES:
            reason = f"backend='flash' supports {SUPPORTED_DTYPES} only (got {dtype}); fp16 breaks ring-flash-attn's backward"
        if reason is not None:
            raise RingConfigError(reason + "; use backend='torch' or 'auto'")
        return BackendChoice("flash", "forced: ring-flash-attn / flash-attn kernels")
    if kind == "cpu":
        return BackendChoice("cpu_flash", "CPU: torch's CPU flash-attention op")
    if kind != "cuda":
        return BackendChoice("math", f"device {kind!r}: explicit-softmax math kernel", fallback=True)
    obstacle = _torch_flash_obstacle(dtype, head_dim, capability)
    if obstacle is None:
        cap = f"sm{capability[0]}{capability[1]}"
        return BackendChoice("torch_flash", f"CUDA {dtype}, {cap}: torch's flash kernels")
    if dtype in EFFICIENT_DTYPES:
        return BackendChoice("cuda_efficient", f"torch flash cannot serve {obstacle}; using mem-efficient SDPA",
                             fallback=True)
    return BackendChoice("math", f"torch flash cannot serve {obstacle} and mem-efficient SDPA has no {dtype}; "
                                 "using the math kernel", fallback=True)


def device_capability(device: torch.device) -> tuple[int, int] | None:
    """(major, minor) of a CUDA device, None elsewhere."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return tuple(torch.cuda.get_device_capability(device))


def describe(choice: BackendChoice) -> str:
    return LABELS[choice.name]


_LOGGED: set[tuple[str, str]] = set()


def log_choice_once(choice: BackendChoice) -> None:
    """Log each distinct choice once per process: fallbacks as warnings, the rest as info."""
    key = (choice.name, choice.reason)
    if key in _LOGGED:
        return
    _LOGGED.add(key)
    level = logging.WARNING if choice.fallback else logging.INFO
    logger.log(level, "attention kernels: %s (%s)", describe(choice), choice.reason)
