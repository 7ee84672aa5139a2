"""The evaluation report: MM-NIAH's binning, empty cells left empty in ours and zero in MM-NIAH's, heatmaps drawn."""

import math

import numpy as np
import pytest
from PIL import Image

from v2pe_train.eval import report

K = 1024


def row(n, depth, score, subset="text_retrieval", stride=64):
    return {"id": f"{n}-{depth}-{score}", "task": "long_mr", "subset": subset, "num_tokens": n, "depth": depth,
            "stride": stride, "score": score}


@pytest.mark.parametrize("n,label", [(1000, None), (1024, "1K-2K"), (33 * K, "32K-40K"), (64 * K, "64K-128K"),
                                     (1024 * K, ">=1M"), (700 * K, "512K-1M")])
def test_length_bins_are_mmniah_bins_extended_by_doubling(n, label):
    i = report.length_bin(n)
    assert (None if i is None else report.length_label(i)) == label


@pytest.mark.parametrize("depth,cell", [(0.0, 0), (0.19, 0), (0.2, 1), (0.5, 2), (0.99, 4), (1.0, 4)])
def test_depth_bins_are_fifths_with_one_in_the_last(depth, cell):
    assert report.depth_bin(depth) == cell


def test_a_list_of_needle_depths_counts_at_its_mean():
    assert report.depth_of({"depth": [0.1, 0.5]}) == pytest.approx(0.3)
    assert report.depth_of({"depth": None}) is None


def test_empty_cells_stay_empty_in_ours_and_count_as_zero_in_mmniahs():
    rows = [row(40 * K, 0.1, 1.0), row(40 * K, 0.1, 0.0), row(40 * K, 0.9, 1.0)]
    bins, sums, counts = report.grid(rows)
    means = report.cell_means(sums, counts)
    assert means[0, 0] == 0.5 and means[0, 4] == 1.0 and all(math.isnan(means[0, j]) for j in (1, 2, 3))
    mm = report.mmniah_scores(rows)
    assert mm["tasks"]["text_retrieval"] == {"40K-48K": pytest.approx((0.5 + 1.0) / 5)}
    assert mm["overall"] == pytest.approx(0.3)


def test_the_overall_mmniah_score_is_the_mean_over_tasks():
    rows = [row(8 * K, d / 5 + 0.1, 1.0, subset="a") for d in range(5)] + \
           [row(8 * K, d / 5 + 0.1, 0.0, subset="b") for d in range(5)]
    assert report.mmniah_scores(rows)["overall"] == pytest.approx(0.5)


def test_report_writes_a_table_and_non_blank_heatmaps_per_stride(tmp_path):
    rng = np.random.default_rng(0)
    rows = [row(int(n), float(d), float(rng.random() < 0.7), stride=s)
            for s in (16, 64) for n in (20 * K, 50 * K, 100 * K) for d in np.linspace(0, 1, 6)]
    written = report.write_report(rows, tmp_path)
    md = written["markdown"].read_text()
    assert "| 16 | long_mr | text_retrieval |" in md and "| 64 | long_mr | text_retrieval |" in md
    assert "MM-NIAH aggregation, stride 16" in md
    for key in ("heatmap_16", "heatmap_64", "mmniah_16", "mmniah_64"):
        im = np.asarray(Image.open(written[key]).convert("L"))
        assert im.std() > 10  # something is drawn, not a blank canvas


def test_table_names_samples_shorter_than_the_first_bin():
    md = report.markdown_table([row(500, 0.5, 1.0), row(2 * K, 0.5, 0.0)])
    assert "<1K" in md and "100.0 (n=1)" in md and "0.0 (n=1)" in md
