"""The image processor config written beside checkpoints and exports tiles as the trainer does.

`AutoImageProcessor.from_pretrained(folder)` must load without torchvision and give, for every image size and
tile cap, the trainer's tile count (`v2pe_common.tiling.num_tiles`) and the trainer's pixels
(`SampleProcessor.tile`, whose default `reference` backend is the same Pillow processor).
"""

import io
import json

import numpy as np
import pytest
import torch

from v2pe_common.tiling import IMAGENET_MEAN, IMAGENET_STD, TilingConfig, num_tiles
from v2pe_common.tokenizer import load_tokenizer
from v2pe_train.data.samples import SampleProcessor
from v2pe_train.model_files import IMAGE_PROCESSOR_FILE, PROCESSOR_FILE, save_processor

# Square, wide, tall, tiny, huge, near-square and exact-grid images.
SIZES = [(448, 448), (900, 500), (500, 900), (300, 1200), (1600, 400), (50, 70), (2000, 1000), (1000, 1001),
         (1344, 448)]


def picture(width: int, height: int) -> tuple[bytes, object]:
    """A PNG with gradients and hard edges (so a resize that differed would show), and its PIL image."""
    from PIL import Image

    yy, xx = np.mgrid[0:height, 0:width]
    arr = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), (xx + yy) % 256], -1)
    im = Image.fromarray(arr.astype(np.uint8))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue(), im


@pytest.mark.parametrize("max_tiles", [1, 6, 12])
def test_auto_image_processor_loads_without_torchvision_and_tiles_as_the_trainer(tmp_path, max_tiles):
    from transformers import AutoImageProcessor

    save_processor(tmp_path, max_tiles)
    config = json.loads((tmp_path / IMAGE_PROCESSOR_FILE).read_text())
    assert config["image_processor_type"] == "GotOcr2ImageProcessorPil" and config["max_patches"] == max_tiles
    assert (config["image_mean"], config["image_std"]) == (list(IMAGENET_MEAN), list(IMAGENET_STD))
    assert json.loads((tmp_path / PROCESSOR_FILE).read_text()) == {"processor_class": "InternVLProcessor",
                                                                   "image_seq_length": 256}
    processor = AutoImageProcessor.from_pretrained(str(tmp_path))
    assert type(processor).__name__ == "GotOcr2ImageProcessorPil"
    ours = SampleProcessor(load_tokenizer(), pixel_dtype="fp32")
    tiling = TilingConfig(max_tiles=max_tiles)
    for width, height in SIZES:
        data, im = picture(width, height)
        got = processor(images=[im], return_tensors="pt")
        tiles = int(got["num_patches"][0])
        assert tiles == num_tiles(width, height, tiling), (width, height)
        pixels = torch.empty((tiles, 3, 448, 448))
        ours.tile(data, f"{width}x{height}", tiles, tiling, pixels)
        torch.testing.assert_close(pixels, got["pixel_values"], rtol=0, atol=0)
