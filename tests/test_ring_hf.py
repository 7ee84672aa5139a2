"""The registered transformers attention "v2pe_ring" on a tiny InternVL, 2 gloo processes."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from distributed import run_distributed

from v2pe_train.ring import RingContext, pad_to_multiple, ring_context, zigzag_shard, zigzag_unshard
from v2pe_train.ring.hf_attention import use_ring_attention, v2pe_ring_attention
from v2pe_train.ring.reference import varlen_causal_attention

LENS = [13, 7, 22]  # unpadded packed samples
GRAD_PARAMS = ("model.language_model.layers.0.self_attn.q_proj.weight", "model.language_model.layers.1.self_attn.k_proj.weight")


def _tiny_internvl():
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    cfg = InternVLConfig(
        text_config=dict(model_type="qwen2", vocab_size=99, hidden_size=64, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512),
        vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                           image_size=64, patch_size=4),
        image_token_id=1, image_seq_length=64,
    )
    torch.manual_seed(0)
    return InternVLForConditionalGeneration(cfg).eval()


def _data(world):
    """Padded ids, V2PE-like float64 positions, loss weights (0 at pads) and the layout."""
    layout = pad_to_multiple(np.concatenate([[0], np.cumsum(LENS)]), 2 * world)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 99, (layout.orig_total,), generator=g)
    pos = []
    for n in LENS:  # text +1, then an "image" run with stride 1/4, then text again
        p = np.concatenate([np.arange(3.0), 3 + np.arange(n - 5) * 0.25, np.ceil(3 + (n - 6) * 0.25) + 1 + np.arange(2.0)])
        pos.append(p[:n])
    pos = np.concatenate(pos)
    w = torch.randn(layout.orig_total, 99, generator=g)
    return layout, layout.pad(ids, 0), layout.pad_positions(pos), layout.pad(w, 0.0)


def _hf_worker(rank, world, group):
    layout, ids, pos, w = _data(world)
    cu = layout.cu_seqlens
    model = _tiny_internvl()
    use_ring_attention(model)
    # activation checkpointing recomputes attention during backward: the ring_context kwarg must be replayed
    model.train()
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.config.text_config._attn_implementation == "v2pe_ring"
    assert model.config.vision_config._attn_implementation == "sdpa"
    emb = zigzag_shard(model.get_input_embeddings()(ids), cu, rank, world)[None]
    pos_l = torch.from_numpy(zigzag_shard(pos, cu, rank, world))[None]
    ctx = RingContext(group=group, cu_seqlens=cu)
    logits = model(inputs_embeds=emb, position_ids=pos_l, ring_context=ctx).logits[0]
    (logits * zigzag_shard(w, cu, rank, world)).sum().backward()
    params = dict(model.named_parameters())
    grads = {}
    for n in GRAD_PARAMS:
        dist.all_reduce(params[n].grad, group=group)
        grads[n] = params[n].grad
    with torch.no_grad(), ring_context(group=group, cu_seqlens=cu):  # the context-manager path
        logits_cm = model(inputs_embeds=emb, position_ids=pos_l).logits[0]
    torch.testing.assert_close(logits_cm, logits.detach(), atol=0, rtol=0)

    # the attention fn alone vs SDPA on the same q/k/v
    g = torch.Generator().manual_seed(2)
    q, k, v = torch.randn(layout.total, 4, 8, generator=g), torch.randn(layout.total, 2, 8, generator=g), torch.randn(layout.total, 2, 8, generator=g)
    ql, kl, vl = (zigzag_shard(x, cu, rank, world).transpose(0, 1)[None] for x in (q, k, v))
    attn_out, none = v2pe_ring_attention(None, ql, kl, vl, None, scaling=0.3, ring_context=ctx)
    assert none is None and attn_out.shape == (1, layout.total // world, 4, 8)
    return {"logits": logits.detach(), "grads": grads, "attn": attn_out[0], "qkv": (q, k, v)}


def test_ring_internvl_text_model_matches_single_process():
    world = 2
    results = run_distributed(_hf_worker, world=world)
    layout, ids, pos, w = _data(world)
    cu = layout.cu_seqlens

    # attention fn alone
    q, k, v = results[0]["qkv"]
    got = zigzag_unshard([r["attn"] for r in results], cu, world)
    torch.testing.assert_close(got, varlen_causal_attention(q, k, v, cu, scale=0.3), atol=1e-5, rtol=1e-5)

    # single-process reference: each sample on its own, SDPA, explicit all-ones mask
    model = _tiny_internvl()
    model.set_attn_implementation("sdpa")
    real = torch.from_numpy(~layout.is_pad)
    ids_u, pos_u, w_u = ids[real], layout.unpad(pos), w[real]
    ref = []
    for a, b in zip(layout.orig_cu_seqlens[:-1], layout.orig_cu_seqlens[1:]):
        out = model(input_ids=ids_u[None, a:b], position_ids=torch.from_numpy(pos_u[a:b])[None],
                    attention_mask=torch.ones(1, b - a, dtype=torch.long))
        ref.append(out.logits[0])
    ref = torch.cat(ref)
    (ref * w_u).sum().backward()

    logits = layout.unpad(zigzag_unshard([r["logits"] for r in results], cu, world))
    torch.testing.assert_close(logits, ref.detach(), atol=1e-5, rtol=1e-5)
    params = dict(model.named_parameters())
    for n in GRAD_PARAMS:
        torch.testing.assert_close(results[0]["grads"][n], params[n].grad, atol=1e-5, rtol=1e-4)
