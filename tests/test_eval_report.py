"""The evaluation report: our binning (empty cells left empty), MM-NIAH's own aggregation, heatmaps drawn."""

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
def test_our_length_bins_double_past_64k(n, label):
    i = report.length_bin(n)
    assert (None if i is None else report.length_label(i)) == label


@pytest.mark.parametrize("depth,cell", [(0.0, 0), (0.19, 0), (0.2, 1), (0.5, 2), (0.99, 4), (1.0, 4)])
def test_depth_bins_are_fifths_with_one_in_the_last(depth, cell):
    assert report.depth_bin(depth) == cell


def test_a_list_of_needle_depths_counts_at_its_mean():
    assert report.depth_of({"depth": [0.1, 0.5]}) == pytest.approx(0.3)
    assert report.depth_of({"depth": None}) is None


def test_empty_cells_stay_empty_in_ours():
    rows = [row(40 * K, 0.1, 1.0), row(40 * K, 0.1, 0.0), row(40 * K, 0.9, 1.0)]
    bins, sums, counts = report.grid(rows)
    means = report.cell_means(sums, counts)
    assert means[0, 0] == 0.5 and means[0, 4] == 1.0 and all(math.isnan(means[0, j]) for j in (1, 2, 3))


def mm(n, depth, score, task="retrieval-text-val", group="m"):
    return {**row(n, depth, score), "task": "mm_niah", "mmniah_task": task, "mmniah_split": "val", "group": group}


def test_mmniah_bins_are_its_own_thousands_and_empty_cells_count_as_zero():
    from v2pe_train.eval import mmniah_report as mr

    # 1999 is in the 1k column, 2000 in the 2k one; 999 is dropped; 64000 and 90000 share the last column
    rows = [mm(1999, 0.1, 1.0), mm(2000, 0.1, 1.0), mm(999, 0.5, 1.0), mm(64000, 0.0, 1.0), mm(90000, 0.0, 0.0)]
    scores, grid = mr.task_scores(rows)
    assert scores[0] == scores[1] == 0.2  # one full cell of five
    assert scores[-1] == 0.1  # (1 + 0) / 2 in one cell of five
    assert sum(scores[2:-1]) == 0 and grid.shape == (5, 11)
    # depth bins: int(depth / 0.2), so 0.6 / 0.2 = 2.9999... lands in row 2; 1.0 counts as 0.99 (row 4)
    _, grid = mr.task_scores([mm(5000, 0.6, 1.0), mm(5000, 1.0, 1.0), mm(5000, [0.1, 0.5], 1.0)])
    assert grid[2, 2] == 1.0 and grid[4, 2] == 1.0 and grid[1, 2] == 1.0 and grid[3, 2] == 0.0
    with pytest.raises(ValueError, match="placed_depth"):
        mr.depth_value(1.2)


def test_mmniah_overall_only_over_six_task_files_with_its_warning():
    from v2pe_train.eval import mmniah_report as mr

    six = [mm(5000, 0.1, float(i % 2), task=f"t{i}-val") for i in range(6)]
    agg, warnings = mr.aggregate(six)
    assert not warnings and agg[("m", "val")]["overall"][2] == pytest.approx(0.1)  # (3 x 0.2 + 3 x 0) / 6
    agg, warnings = mr.aggregate(six[:5])
    assert agg[("m", "val")]["overall"] is None
    assert warnings and "len(res)=5 is not equal to 6, the overall score will be ignored" in warnings[0]


@pytest.mark.parametrize("name, parsed", [("InternVL2-2B_retrieval-text-val.jsonl", ("InternVL2-2B", "retrieval-text-val", "val")),
                                          ("my_model_counting-image-rag-test.jsonl", ("my_model", "counting-image-rag-test", "rag-test"))])
def test_answer_file_names_split_as_mmniah_does(name, parsed):
    from v2pe_train.eval import mmniah_report as mr

    assert mr.parse_name(name) == parsed
    with pytest.raises(mr.AnswerFileError, match="splits"):
        mr.parse_name("model_retrieval-text.jsonl")


def test_report_writes_a_table_and_non_blank_heatmaps_per_stride(tmp_path):
    rng = np.random.default_rng(0)
    rows = [row(int(n), float(d), float(rng.random() < 0.7), stride=s)
            for s in (16, 64) for n in (20 * K, 50 * K, 100 * K) for d in np.linspace(0, 1, 6)]
    written, warnings = report.write_report(rows, tmp_path)
    md = written["markdown"].read_text()
    assert "| 16 | long_mr | text_retrieval |" in md and "| 64 | long_mr | text_retrieval |" in md
    assert "MM-NIAH" not in md and "nan" not in md and not warnings  # no MM-NIAH rows: no MM-NIAH section
    for key in ("heatmap_16", "heatmap_64"):
        im = np.asarray(Image.open(written[key]).convert("L"))
        assert im.std() > 10  # something is drawn, not a blank canvas


def test_table_names_samples_shorter_than_the_first_bin():
    md = report.markdown_table([row(500, 0.5, 1.0), row(2 * K, 0.5, 0.0)])
    assert "<1K" in md and "100.0 (n=1)" in md and "0.0 (n=1)" in md
