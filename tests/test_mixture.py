"""Train-time mixtures: several datasets interleaved by their (repeated) lengths or weights, streamed,
deterministic for a seed, and resumed exactly mid-epoch.

The datasets are text-only InternVL JSONLs in the released layout (no fields of ours), so an epoch of
hundreds of samples costs well under a second; one is a meta JSON whose entry sets `repeat_time`.
"""

from __future__ import annotations

import collections
import json
import math

import pytest

from v2pe_common.tokenizer import load_tokenizer
from v2pe_train.data import LoaderConfig, PackedLoader

TOK = load_tokenizer()
SIZES = {"a": 120, "b": 40, "c": 80}


def write_lines(path, prefix: str, n: int) -> None:
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}", "conversations": [
        {"from": "human", "value": f"Item {i} of {prefix}?"}, {"from": "gpt", "value": f"{prefix} {i * 3}" + " and more" * (i % 7 * 9)}]}) + "\n"
        for i in range(n)))


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    base = tmp_path_factory.mktemp("mix")
    for name, n in SIZES.items():
        write_lines(base / f"{name}.jsonl", name, n)
    (base / "c_meta.json").write_text(json.dumps(
        {"c_half": {"root": ".", "annotation": "c.jsonl", "data_augment": False, "repeat_time": 0.5, "length": 80}}))
    return base


def dataset_of(sample_id: str) -> str:
    return sample_id[0]


def epoch_ids(datasets, **kw) -> list[str]:
    loader = PackedLoader(LoaderConfig(datasets=datasets, num_epochs=1, **kw), TOK)
    ids = [i for b in loader for i in b.ids]
    assert loader.stats.num_errors == 0, loader.stats.summary()
    return ids


def test_an_epoch_takes_each_dataset_by_its_repeated_length_without_replacement(sets):
    """a once (120), b repeat_time 2.5 (2 passes + 20 of a third), c's meta entry repeat_time 0.5 (40 of 80)."""
    ids = epoch_ids([{"path": str(sets / "a.jsonl")}, {"path": str(sets / "b.jsonl"), "repeat_time": 2.5},
                     {"path": str(sets / "c_meta.json")}], seed=1)
    per = collections.Counter(dataset_of(i) for i in ids)
    assert per == {"a": 120, "b": 100, "c": 40}
    a, b, c = ([i for i in ids if dataset_of(i) == d] for d in "abc")
    assert sorted(set(a)) == sorted(f"a{i}" for i in range(120)) and len(a) == 120
    assert len(set(c)) == 40  # a subsample: no line twice
    times = collections.Counter(collections.Counter(b).values())
    assert times == {2: 20, 3: 20}  # every line twice, a random 20 of them a third time
    # any stretch holds each dataset at its share, up to the sampling error of drawing without replacement
    n, total = 130, len(ids)
    for d, k in per.items():
        share = k / total
        sd = math.sqrt(n * share * (1 - share) * (total - n) / (total - 1))
        got = sum(dataset_of(i) == d for i in ids[:n])
        assert abs(got - n * share) <= 4 * sd, (d, got, n * share, sd)


def test_weights_set_each_datasets_share_of_the_epoch(sets):
    ids = epoch_ids([{"path": str(sets / "a.jsonl"), "weight": 1}, {"path": str(sets / "b.jsonl"), "weight": 3}], seed=2)
    per = collections.Counter(dataset_of(i) for i in ids)
    # 160 samples an epoch split 1:3 -> a: 40 of its 120 lines (r = 1/3), b: 120 = its 40 lines 3 times
    assert per == {"a": 40, "b": 120}
    assert len({i for i in ids if dataset_of(i) == "a"}) == 40


def test_the_order_is_fixed_by_the_seed_and_changes_with_it(sets):
    mix = [{"path": str(sets / "a.jsonl")}, {"path": str(sets / "b.jsonl"), "repeat_time": 1.5}]
    first = epoch_ids(mix, seed=7)
    assert epoch_ids(mix, seed=7) == first
    assert epoch_ids(mix, seed=8) != first


def test_data_parallel_ranks_split_a_mixture_into_disjoint_parts(sets):
    mix = [{"path": str(sets / "a.jsonl")}, {"path": str(sets / "c_meta.json")}]
    ranks = [epoch_ids(mix, seed=3, dp_rank=r, dp_size=2) for r in range(2)]
    assert not set(ranks[0]) & set(ranks[1])
    assert set(ranks[0]) | set(ranks[1]) >= {f"a{i}" for i in range(120)}
    assert collections.Counter(dataset_of(i) for r in ranks for i in r) == {"a": 120, "c": 40}


def test_resume_mid_epoch_gives_the_batches_of_an_uninterrupted_run(sets):
    cfg = LoaderConfig(datasets=[{"path": str(sets / "a.jsonl")}, {"path": str(sets / "b.jsonl"), "repeat_time": 2.5},
                                 {"path": str(sets / "c_meta.json")}],
                       num_epochs=2, seed=4, max_seq_len=600, buffer_size=5, position_mode="v2pe_rnd")
    loader = PackedLoader(cfg, TOK)
    full, states = [], []
    for batch in loader:
        full.append(batch)
        states.append(json.loads(json.dumps(loader.state_dict())))
    assert any(b.num_samples > 1 for b in full)
    pending = next(k for k, st in enumerate(states) if st["pending"])
    boundary = max(k for k, st in enumerate(states) if st["epoch"] == 0)
    for k in sorted({pending, len(full) // 3, boundary, len(full) - 2}):
        resumed = PackedLoader(cfg, TOK)
        resumed.load_state_dict(states[k])
        rest = list(resumed)
        assert [b.ids for b in rest] == [b.ids for b in full[k + 1:]]
        for x, y in zip(rest, full[k + 1:]):
            assert (x.input_ids == y.input_ids).all() and (x.position_ids == y.position_ids).all()
        assert resumed.stats.samples == loader.stats.samples


def test_bad_mixture_specs_are_refused_naming_the_key(sets):
    a = str(sets / "a.jsonl")
    for datasets, message in [
        ([{"path": a, "weight": 1}, {"path": a}], "give a weight to every dataset or to none"),
        ([{"path": a, "weight": -1}], r"datasets\[0\]\.weight: must be a finite number in \(0, 1000000\.0\], got -1"),
        ([{"path": a, "repeat": 2}], r"datasets\[0\]: unknown key\(s\) \['repeat'\]"),
        ([{"path": str(sets / "none*.jsonl")}], r"datasets\[0\]\.path: data: .* matches no file"),
    ]:
        with pytest.raises(ValueError, match=message):
            PackedLoader(LoaderConfig(datasets=datasets), TOK)
    with pytest.raises(ValueError, match="not both"):
        LoaderConfig(paths=[a], datasets=[{"path": a}])



def test_a_sample_waiting_twice_in_the_packing_buffer_is_restored_twice(tmp_path):
    """A dataset repeated within an epoch can leave one sample waiting twice in the packing buffer; a resume
    re-reads it once and puts back both copies (no shard fault is reported)."""
    write_lines(tmp_path / "tiny.jsonl", "t", 2)
    cfg = LoaderConfig(datasets=[{"path": str(tmp_path / "tiny.jsonl"), "repeat_time": 4}], num_epochs=1,
                       max_seq_len=100_000)
    state = json.loads(json.dumps(PackedLoader(cfg, TOK).state_dict()))
    state["pending"] = [[0, 1, "t1"], [0, 0, "t0"], [0, 1, "t1"]]
    resumed = PackedLoader(cfg, TOK)
    resumed.load_state_dict(state)
    ids = [i for b in resumed for i in b.ids]
    assert resumed.stats.num_errors == 0, resumed.stats.summary()
    assert ids[:3] == ["t1", "t0", "t1"] and collections.Counter(ids) == {"t0": 5, "t1": 6}


def test_a_recipe_trains_on_a_mixture_and_names_a_bad_dataset_key(sets, tmp_path):
    from v2pe_common.recipe import ConfigError
    from v2pe_train.config import TrainConfig
    from v2pe_train.train import train

    mix = [{"path": str(sets / "a.jsonl"), "weight": 1}, {"path": str(sets / "c_meta.json"), "weight": 2}]
    cfg = TrainConfig(model="tiny", datasets=mix, out=str(tmp_path / "run"), max_seq_len=1024, max_steps=3,
                      save_every=100, warmup_ratio=0.0, lr=1e-3, precision="fp32", seed=1)
    assert len(train(cfg, progress=False).losses) == 3
    with pytest.raises(ConfigError, match=r"datasets\[1\]\.repeat_time: must be a finite number in \[0, 1000\]"):
        TrainConfig.from_dict({"datasets": [{"path": "x"}, {"path": "y", "repeat_time": "2"}]})


def test_plain_data_says_it_does_not_apply_a_meta_repeat_time(sets, caplog):
    with caplog.at_level("WARNING", logger="v2pe_train.data"):
        ids = [i for b in PackedLoader(LoaderConfig(paths=[str(sets / "c_meta.json")]), TOK) for i in b.ids]
    assert len(ids) == SIZES["c"]
    assert any("c_half (0.5)" in r.message and "list the meta file under `datasets`" in r.message for r in caplog.records)
