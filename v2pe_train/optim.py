"""AdamW with decoupled weight decay, and transformers' linear-warmup cosine schedule (with a floor).

Which parameters decay: by default only matrices (>= 2-D); norm weights, biases and other vectors are
left alone, the common practice. `decay_all=True` decays every trainable parameter, as the reference
V2PE trainer does (its DeepSpeed optimizer gets all parameters in one group with the recipe's weight decay).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float, *, decay_all: bool = False) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if decay_all or p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float, betas, eps: float,
                    decay_all: bool = False) -> torch.optim.AdamW:
    groups = param_groups(model, weight_decay, decay_all=decay_all)
    if not any(g["params"] for g in groups):
        raise ValueError("nothing to train: every parameter is frozen")
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


def cosine_with_warmup(optimizer, *, total_steps: int, warmup_ratio: float, min_lr_ratio: float = 0.0):
    """transformers' cosine-with-warmup LambdaLR decaying to `min_lr_ratio` x lr, warmup = ceil(total x ratio).

    The same lr per step as a transformers/Trainer run of these settings: warmup starts at 0 on step 0 and
    reaches the peak at step `warmup` (a hand-written (step + 1) / warmup was one step ahead of it).
    """
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    warmup = int(math.ceil(total_steps * warmup_ratio))
    return get_cosine_with_min_lr_schedule_with_warmup(optimizer, num_warmup_steps=warmup,
                                                       num_training_steps=total_steps, min_lr_rate=min_lr_ratio)
