"""Loss of the training targets by evaluation length: the position effect, continuous and seen per token.

For each trained run and each evaluation set, one teacher-forced forward per sample at each of the run's
strides, with V2PE positions (`v2pe_fix` at stride S, or `default`; each sample decoded once), gives the
mean cross-entropy of the tokens the run was trained to predict, with its own `train_on_prompt` and
`train_on_eos`: for the documented scales the answer and its end-of-turn marker. A model whose positions
leave the range it was trained on predicts them worse; one whose positions stay in range does not. Written
to `OUT/eval/<run>/<m>x/lm_loss.json` (resumable per file).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path

from .config import ExperimentConfig
from .stages import complete_runs, eval_dir_name, eval_folder, tokenizer_dir


def latest_checkpoint(run: Path) -> Path:
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    if not ckpts:
        raise FileNotFoundError(f"{run} holds no checkpoint: run the train stage first")
    return ckpts[-1]


def text_loss(model, loader, strides, img_start_id: int) -> dict:
    """{stride: {'nll': mean CE per supervised token, 'tokens', 'samples'}} over one pass of `loader`
    (one sample a batch), each sample decoded once and scored at every stride."""
    import torch

    from v2pe_train.loss import LossBatch, shift_labels
    from v2pe_train.objective import LossModule, loss
    from v2pe_train.positions import position_ids

    device = next(model.parameters()).device
    module = LossModule(model)  # the trainer's forward and loss, on one device with its dense mask
    sums = {str(s): [0.0, 0, 0] for s in strides}
    with torch.no_grad():
        for b in loader:
            pixels = b.pixel_values.to(device, model.dtype) if b.pixel_values.numel() else None
            shifted = shift_labels(b.labels).to(device)
            weights = (shifted != -100).float()  # every target token counts once: the mean CE per token
            starts = (b.input_ids[0] == img_start_id).nonzero().flatten().tolist()
            for stride in strides:
                fixed = str(stride) != "default"
                pos = position_ids(b.num_tokens, starts, b.image_tiles.tolist(),
                                   mode="v2pe_fix" if fixed else "default", stride=int(stride) if fixed else None)
                batch = LossBatch(b.input_ids.to(device), torch.from_numpy(pos)[None].to(device), pixels,
                                  [[b.num_tokens]], shifted, weights)
                acc = sums[str(stride)]
                acc[0] += float(loss(module, batch).ce)
                acc[1] += int((shifted != -100).sum())
                acc[2] += b.num_samples
    return {s: {"nll": t / max(n, 1), "tokens": n, "samples": k} for s, (t, n, k) in sums.items()}


def measure(cfg: ExperimentConfig, out: Path, say: Callable[[str], None]) -> None:
    import torch

    from v2pe_common.tokenizer import load_tokenizer
    from v2pe_train.data import LoaderConfig, PackedLoader
    from v2pe_train.model import build_model

    torch.set_num_threads(max(1, cfg.threads * cfg.parallel))
    tokenizer = load_tokenizer(str(tokenizer_dir(cfg, out)))
    for run in cfg.runs():
        mode = run.rsplit("_s", 1)[0]
        model = None
        for m in sorted(set(cfg.eval_multiples)):
            path = eval_folder(out, run, m) / "lm_loss.json"
            if path.is_file():
                continue
            if model is None:
                model = build_model(latest_checkpoint(out / "runs" / run), tokenizer).to(cfg.device).eval()
            loader = PackedLoader(LoaderConfig(paths=[str(out / "data" / eval_dir_name(m))], shuffle=False,
                                               num_epochs=1, pixel_dtype="fp32", train_on_prompt=cfg.train_on_prompt,
                                               train_on_eos=cfg.train_on_eos, tiling_backend="fast"), tokenizer)
            result = text_loss(model, loader, cfg.strides[mode], tokenizer.img_start_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1) + "\n")
            say(f"  {run}@{m}x: " + ", ".join(f"stride {s} nll {r['nll']:.3f}" for s, r in result.items()))


def collect(cfg: ExperimentConfig, out: Path) -> dict:
    """{'<mode>@<stride>': {'<m>': {'mean': nll over seeds, 'per_seed': {...}, 'ppl': exp(mean)}}}."""
    table: dict = {}
    for run in complete_runs(cfg, out):
        mode, seed = run.rsplit("_s", 1)
        for m in sorted(set(cfg.eval_multiples)):
            path = eval_folder(out, run, m) / "lm_loss.json"
            if not path.is_file():
                continue
            for stride, r in json.loads(path.read_text()).items():
                cell = table.setdefault(f"{mode}@{stride}", {}).setdefault(str(m), {"per_seed": {}})
                cell["per_seed"][seed] = r["nll"]
    for cells in table.values():
        for cell in cells.values():
            vals = list(cell["per_seed"].values())
            cell["mean"] = statistics.fmean(vals)
            cell["ppl"] = math.exp(cell["mean"])
    return table
