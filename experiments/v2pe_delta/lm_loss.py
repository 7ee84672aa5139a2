"""Language-modelling loss by evaluation length: the position effect seen without the retrieval task.

For each trained run and each evaluation set, one teacher-forced forward per sample at each of the run's
strides, with the loader's V2PE positions (`v2pe_fix` at stride S, or `default`), gives the mean
cross-entropy of every text token of the prompt and the reply (what `train_on_prompt` trains). A model whose positions leave the range it was trained on predicts
its own kind of text worse; one whose positions stay in range does not. Written to
`OUT/eval/<run>/<m>x/lm_loss.json` (resumable per file).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from .config import ExperimentConfig
from .stages import eval_dir_name, eval_folder, tokenizer_dir


def latest_checkpoint(run: Path) -> Path:
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    if not ckpts:
        raise FileNotFoundError(f"{run} holds no checkpoint: run the train stage first")
    return ckpts[-1]


def text_loss(model, loader) -> dict:
    """{'nll': mean CE per supervised token, 'tokens': count, 'samples': n} over one pass of `loader`."""
    import torch

    from v2pe_train.loss import shift_labels
    from v2pe_train.model import forward

    device = next(model.parameters()).device
    total, tokens, samples = 0.0, 0, 0
    with torch.no_grad():
        for b in loader:
            pixels = b.pixel_values.to(device, model.dtype) if b.pixel_values.numel() else None
            logits = forward(model, b.input_ids.to(device), b.position_ids.to(device), pixel_values=pixels)
            shifted = shift_labels(b.labels).to(device)
            ce = torch.nn.functional.cross_entropy(logits[0].float(), shifted[0], ignore_index=-100,
                                                   reduction="sum")
            total += float(ce)
            tokens += int((shifted != -100).sum())
            samples += b.num_samples
    return {"nll": total / max(tokens, 1), "tokens": tokens, "samples": samples}


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
            result = {}
            for stride in cfg.strides[mode]:
                fixed = str(stride) != "default"
                loader = PackedLoader(LoaderConfig(
                    data=[str(out / "data" / eval_dir_name(m))], shuffle=False, num_epochs=1, pixel_dtype="fp32",
                    position_mode="v2pe_fix" if fixed else "default", stride=int(stride) if fixed else None,
                    train_on_prompt=True, tiling_backend="fast"), tokenizer)
                result[str(stride)] = text_loss(model, loader)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1) + "\n")
            say(f"  {run}@{m}x: " + ", ".join(f"stride {s} nll {r['nll']:.3f}" for s, r in result.items()))


def collect(cfg: ExperimentConfig, out: Path) -> dict:
    """{'<mode>@<stride>': {'<m>': {'mean': nll over seeds, 'per_seed': {...}, 'ppl': exp(mean)}}}."""
    table: dict = {}
    for run in cfg.runs():
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
            cell["mean"] = sum(vals) / len(vals)
            cell["ppl"] = math.exp(cell["mean"])
    return table
