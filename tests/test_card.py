"""The dataset card: every build writes OUT/README.md so stock `datasets.load_dataset(OUT)` returns the samples.

Without it `load_dataset` guessed from the files and returned `internvl/images/` as an image
classification set. The card's YAML must parse with the `huggingface_hub` and `datasets` card parsers,
point one config per task/length bin at the parquet shards, and carry what made the build (sources and
licences, rejections, seed, versions, tokenizer hash, a recipe that rebuilds it).
"""

from __future__ import annotations

import json
import re

import datasets
import pytest
import yaml
from huggingface_hub import DatasetCard
from typer.testing import CliRunner

from v2pe_common.formats.parquet import read_parquet_samples
from v2pe_data.build import build
from v2pe_data.card import CARD_FILE, render_card
from v2pe_data.cli import app
from v2pe_data.config import BuildConfig

RUNNER = CliRunner()


def small(out, formats, n=4):
    return BuildConfig(length=4096, min_length=1024, num_samples=n, shard_size=2, seed=5, out=str(out),
                       formats=formats)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("card") / "b"
    return out, build(small(out, ["wds", "parquet", "internvl"]), show_progress=False)


def parquet_samples(out, manifest):
    """id -> image bytes in order, read from the build's own parquet shards."""
    got = {}
    for entry in (s for s in manifest["shards"] if s["format"] == "parquet"):
        for record, images in read_parquet_samples(out / entry["path"]):
            got[record["id"]] = [images[name] for name in sorted(images, key=lambda k: int(k.split(".")[0]))]
    return got


def check_rows(ds, expected):
    assert ds.num_rows == len(expected)
    ds = ds.cast_column("images", datasets.List(datasets.Image(decode=False)))
    for row in ds:
        assert [img["bytes"] for img in row["images"]] == expected[row["id"]]
        assert row["conversations"][0]["from"] == "human"


def test_load_dataset_on_the_build_folder_returns_the_samples_and_their_images(built, tmp_path):
    out, manifest = built
    expected = parquet_samples(out, manifest)
    assert len(expected) == manifest["num_samples"] == 4
    assert any(len(v) > 1 for v in expected.values())  # multi-image rows, images in order
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert list(ds) == ["train"]
    check_rows(ds["train"], expected)


def test_load_dataset_by_config_name_returns_the_same_rows(built, tmp_path):
    out, manifest = built
    ds = datasets.load_dataset(str(out), "long_vqa_4k", split="train", cache_dir=str(tmp_path / "cache"))
    check_rows(ds, parquet_samples(out, manifest))


def test_card_yaml_parses_with_the_hub_and_datasets_card_parsers(built):
    out, manifest = built
    card = DatasetCard.load(out / CARD_FILE)
    assert card.data.configs == [{"config_name": "long_vqa_4k", "default": True,
                                  "data_files": [{"split": "train", "path": "parquet/train-*.parquet"}]}]
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs

    configs = MetadataConfigs.from_dataset_card_data(card.data)
    assert configs["long_vqa_4k"]["data_files"] == [{"split": "train", "path": "parquet/train-*.parquet"}]
    infos = DatasetInfosDict.from_dataset_card_data(card.data)
    info = infos["long_vqa_4k"]
    assert info.splits["train"].num_examples == manifest["num_samples"]
    assert info.features["images"] == datasets.List(datasets.Image())
    parquet_bytes = sum(s["bytes"] for s in manifest["shards"] if s["format"] == "parquet")
    assert info.splits["train"].num_bytes == info.download_size == info.dataset_size == parquet_bytes > 0
    assert card.data.license == "apache-2.0"  # synthetic sources only: our own licence
    assert card.data.language == ["en"]


def test_card_records_counts_sources_rejections_seed_versions_and_tokenizer_hash(built):
    out, manifest = built
    text = (out / CARD_FILE).read_text()
    assert f"sha256 `{manifest['tokenizer']['sha256']}`" in text
    assert f"- seed: {manifest['seed']}" in text
    assert manifest["build_id"] in text
    for pkg, version in manifest["versions"].items():
        assert f"{pkg} {version}" in text
    for reason, count in manifest["rejected"]["counts"].items():
        assert f"| {reason} | {count} |" in text
    stats = manifest["token_stats"]
    assert f"| {stats['count']} | {stats['min']} |" in text
    assert "| synthetic | synthetic | train |" in text and "Apache-2.0" in text


def test_the_cards_recipe_rebuilds_the_same_arguments(built):
    """The card's command is exact: its recipe block gives back every argument that decides the bytes."""
    out, manifest = built
    block = re.search(r"```yaml\n(.*?)```", (out / CARD_FILE).read_text(), re.S).group(1)
    cfg = BuildConfig.from_dict({**yaml.safe_load(block), "out": "elsewhere"})
    assert cfg.identity() == manifest["args"]


def fake_manifest(**changes) -> dict:
    return {
        "task": "long_vqa", "split": "val", "num_samples": 0, "build_id": "x", "seed": 1, "template": "chatml",
        "args": {"length": 65536, "min_length": 57344}, "versions": {"v2pe": "0"}, "tiling": {},
        "tokenizer": {"name": "t", "sha256": "abc", "vocab_size": 9}, "shards": [],
        "token_stats": {k: None for k in ("count", "min", "max", "mean", "p50")}
        | {k: 0 for k in ("total", "text_total", "image_total", "images_total")},
        "rejected": {"counts": {}, "examples": []},
        "sources": [{"name": "docvqa", "kind": "docvqa", "path": "/d", "split": "val", "status": "available"},
                    {"name": "chartqa", "kind": "chartqa", "path": "/c", "split": "val", "status": "available"}],
    } | changes


def test_card_lists_each_sources_licence_and_calls_a_mix_other():
    manifest = fake_manifest()
    text = render_card(manifest, {"sources": [{"name": "docvqa", "files": 3, "bytes": 10, "sha256": "f00d"}]})
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["license"] == "other"
    assert "DocVQA (RRC" in text and "GPL-3.0" in text
    assert "/d (3 files, 10 bytes, listing sha256 f00d)" in text
    assert "configs" not in meta  # no parquet shards: nothing to point at


def test_a_build_without_parquet_gets_a_card_saying_how_to_make_it_loadable(tmp_path):
    out = tmp_path / "wds_only"
    build(small(out, ["wds"], n=2), show_progress=False)
    text = (out / CARD_FILE).read_text()
    assert "configs" not in yaml.safe_load(text.split("---\n")[1])
    assert "v2pe-data convert OUT --to parquet" in text and "no parquet shards" in text


def test_card_command_rewrites_the_same_card(built):
    out, _ = built
    before = (out / CARD_FILE).read_bytes()
    (out / CARD_FILE).unlink()
    result = RUNNER.invoke(app, ["card", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / CARD_FILE).read_bytes() == before


def test_card_command_on_a_folder_without_a_manifest_is_a_one_line_error(tmp_path):
    result = RUNNER.invoke(app, ["card", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"{tmp_path / 'manifest.json'}: missing" in lines[0]


def test_card_command_names_a_damaged_manifest(built, tmp_path):
    out, _ = built
    (tmp_path / "manifest.json").write_text("{not json")
    result = RUNNER.invoke(app, ["card", str(tmp_path)])
    assert result.exit_code == 1 and "manifest.json: not valid JSON" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert json.loads((out / "manifest.json").read_text())  # the real build is untouched


def bibtex_keys(text: str) -> list[str]:
    block = re.search(r"## Citation\n.*?```bibtex\n(.*?)```", text, re.S).group(1)
    return re.findall(r"^@\w+\{(\w+),", block, re.M)


def test_card_cites_v2pe_the_sources_drawn_from_and_the_benchmark_whose_data_or_format_it_holds(built):
    out, _ = built
    assert bibtex_keys((out / CARD_FILE).read_text()) == ["ge2025v2pe"]  # synthetic pages: V2PE only
    mix = fake_manifest()  # DocVQA and ChartQA, InfographicVQA unavailable
    mix["sources"].append({"name": "infovqa", "kind": "infovqa", "path": "/i", "split": "val", "status": "missing"})
    assert bibtex_keys(render_card(mix)) == ["ge2025v2pe", "mathew2021docvqa", "masry2022chartqa"]
    mr = fake_manifest(task="long_mr", formats=["wds", "mmniah"], sources=[{"name": "haystack", "kind": "synthetic"}])
    assert bibtex_keys(render_card(mr)) == ["ge2025v2pe", "wang2024mmniah"]
    mile = fake_manifest(task="milebench", formats=["wds", "parquet"], sources=[])
    text = render_card(mile)
    assert bibtex_keys(text) == ["ge2025v2pe", "song2024milebench"]
    assert "arXiv" in text and "2404.18532" in text and "2412.09616" in text


def test_the_quickstart_build_writes_parquet_so_load_dataset_reads_the_folder(tmp_path):
    out = tmp_path / "quick"
    result = RUNNER.invoke(app, ["build", "long_vqa", "--len", "4k", "--min-len", "1k", "-n", "2", "--out", str(out),
                                 "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["formats"] == ["wds", "parquet"]
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert sorted(ds["id"]) == ["long_vqa-train-00000000", "long_vqa-train-00000001"]


def test_every_build_recipe_writes_parquet_beside_the_tar_shards():
    from pathlib import Path

    recipes = [p for p in sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
               if "task" in yaml.safe_load(p.read_text())]
    assert len(recipes) >= 16
    for path in recipes:
        formats = BuildConfig.from_yaml(path).formats
        assert formats[:2] == ["wds", "parquet"], path.name
