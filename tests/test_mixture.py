"""The token-exact mixture stream over generated shards of the four SODA components: recipe, reader, packing,
block-exact mixing, host split, resume."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from synthetic import SODA_LIKE, WORDS, make_output_dir
from tokenizers import Tokenizer

from sodadata.mix.mixture import ComponentConfig, MixtureConfig
from sodadata.mix.packing import MixtureStream, block_schedule, host_slots, merge_states
from sodadata.mix.streaming import ComponentReader, list_shards, permutation, uniform
from sodadata.mix.tokenizer import RowEncoder, build_tokenizer, train_small_base
from sodadata.write.document import BOS, EOS

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "soda.yaml"
SPEC_WEIGHTS = {
    "yodas2/en": 0.95 * 131 / 241,
    "emilia-yodas/en": 0.95 * 73 / 241,
    "emilia/en": 0.95 * 37 / 241,
    "nemotron-cc/hq-actual": 0.05,
}
# More shards than SODA_LIKE for yodas2 and emilia-yodas, so both reader regimes occur with 4 lanes:
# a lane owning whole shards (n >= lanes) and lanes sharing a shard's rows (n < lanes).
COMPONENTS = (
    dataclasses.replace(SODA_LIKE[0], shards=5, docs_per_shard=2, utterances=(2, 5)),
    dataclasses.replace(SODA_LIKE[1], shards=4),
    SODA_LIKE[2],
    SODA_LIKE[3],
)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mixture-data")
    make_output_dir(out, components=COMPONENTS, seed=7)
    return out


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    corpus = [" ".join(WORDS[i:] + WORDS[:i]).capitalize() + "." for i in range(len(WORDS))] * 4
    return build_tokenizer(train_small_base(corpus, vocab_size=500))


def soda(data: Path, **overrides) -> MixtureConfig:
    """recipes/soda.yaml on the generated shards, with test-sized windows."""
    config = MixtureConfig.load(RECIPE, root=str(data))
    return dataclasses.replace(config, **{"seq_len": 64, "lanes": 4, **overrides})


def take(stream: MixtureStream, batch_size: int, steps: int) -> list[dict]:
    return list(itertools.islice(stream.batches(batch_size), steps))


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for k in ("input_ids", "segment_ids", "component"):
            np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]), err_msg=k)


def shard_rows(data: Path, component: str) -> list[str]:
    return [r for p in list_shards(str(data / component)).paths
            for r in pq.read_table(p, columns=["text"])["text"].to_pylist()]


# -- recipe -----------------------------------------------------------------------------------------------------


def test_soda_recipe_declares_the_spec_mixture(data: Path) -> None:
    config = MixtureConfig.load(RECIPE)
    assert config.names == list(SPEC_WEIGHTS)
    for w, name in zip(config.weights(), config.names):
        assert w == pytest.approx(SPEC_WEIGHTS[name], rel=1e-8)
    assert (config.seq_len, config.seed, config.block_size) == (4096, 0, 1000)
    assert config.block_counts() == [516, 288, 146, 50]
    assert config.tokenizer == "soda-research/marin-mimi-bpe-8cb-16k-tokenizer"
    assert 512 % config.lanes == 0  # SODA's global batch splits evenly into lanes
    located = MixtureConfig.load(RECIPE, root=str(data))
    assert located.component_location(located.components[0]) == f"{data}/yodas2/en"
    assert len(located.data_files()["yodas2/en"]) == 5


def test_sample_recipe_is_the_soda_mixture_inherited_not_copied(tmp_path: Path) -> None:
    from sodadata.mix.mixture import read_recipe
    from sodadata.tools.stats_numbers import load_weights

    sample_path = RECIPE.parent / "sample.yaml"
    sample, soda = MixtureConfig.load(sample_path), MixtureConfig.load(RECIPE)
    assert "components" not in yaml.safe_load(sample_path.read_text())  # one home for the weights
    assert sample.components == soda.components and sample.weights() == soda.weights()
    assert (sample.tokenizer, sample.root) == ("tok/", "out/sample")
    assert load_weights(sample_path)[0] == load_weights(RECIPE)[0]  # `sodadata stats --recipe` reads it the same

    # keys written in the extending file win, whole; `extends` is resolved relative to the file, and may chain
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mid.yaml").write_text(f"extends: {RECIPE}\nseq_len: 64\nseed: 5\n")
    (tmp_path / "top.yaml").write_text("extends: sub/mid.yaml\nseed: 7\ncomponents: [{name: a, path: a, weight: 1}]\n")
    top = MixtureConfig.load(tmp_path / "top.yaml")
    assert (top.seq_len, top.seed, top.names, top.lanes) == (64, 7, ["a"], soda.lanes)
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ValueError, match="in a loop"):
        read_recipe(tmp_path / "loop.yaml")
    (tmp_path / "gone.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(FileNotFoundError, match=r"no such recipe file: .*nowhere\.yaml"):
        MixtureConfig.load(tmp_path / "gone.yaml")


def test_largest_remainder_counts() -> None:
    comps = [ComponentConfig(n, "x", w) for n, w in (("a", 1), ("b", 1), ("c", 1))]
    assert MixtureConfig(comps, block_size=10).block_counts() == [4, 3, 3]
    comps = [ComponentConfig(n, "x", w) for n, w in (("a", 0.155), ("b", 0.845))]
    assert MixtureConfig(comps, block_size=100).block_counts() == [16, 84]  # 15.5 vs 84.5: tie -> first
    assert MixtureConfig(comps, block_size=1000).block_counts() == [155, 845]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, "unknown recipe keys"),
        ({"seq_len": 0}, "seq_len"),
        ({"seed": -1}, "seed"),
        ({"lanes": 2.5}, "lanes"),
        ({"block_size": 3}, "no window per block"),
        ({"components": [{"name": "a", "path": "p", "weight": 1}, {"name": "a", "path": "q", "weight": 1}]},
         "unique"),
        ({"components": [{"name": "a", "path": "p", "weight": -1}]}, "positive"),
        ({"components": [{"name": "a", "path": "p"}]}, "name, path and weight"),
        ({"validation": [{"name": "dev", "path": "p", "weight": 0}]}, "validation set needs exactly name and path"),
        ({"validation": [{"name": "dev"}]}, "validation set needs exactly name and path"),
        ({"validation": [{"name": "yodas2/en", "path": "p"}]}, "unique; repeated: ..yodas2/en"),
        ({"validation": "librispeech/dev-clean"}, "validation must be a list"),
        ({"validation": ["librispeech/dev-clean"]}, "validation set is a mapping"),
        ({"validation": [{"name": "dev", "path": ""}]}, "needs a path"),
    ],
)
def test_recipe_errors_name_the_fault(tmp_path: Path, change: dict, message: str) -> None:
    recipe = json.loads(json.dumps(MixtureConfig.load(RECIPE).to_dict())) | change
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    with pytest.raises(ValueError, match=message):
        MixtureConfig.load(path)


def test_validation_sets_are_named_apart_from_the_mixture(tmp_path: Path, data: Path) -> None:
    recipe = MixtureConfig.load(RECIPE).to_dict() | {
        "validation": [{"name": "librispeech/dev-clean", "path": "librispeech/dev-clean"}]}
    path = tmp_path / "with-dev.yaml"
    path.write_text(json.dumps(recipe))
    config = MixtureConfig.load(path, root=str(data))
    (dev,) = config.validation
    assert (dev.name, config.component_location(dev)) == ("librispeech/dev-clean", f"{data}/librispeech/dev-clean")
    assert config.names == list(SPEC_WEIGHTS)  # not a mixture component
    # Never streamed, so a checkpoint's recipe fingerprint stays valid when a validation set is added.
    assert config.fingerprint() == MixtureConfig.load(RECIPE).fingerprint()
    config.save(tmp_path / "saved.yaml")
    assert MixtureConfig.load(tmp_path / "saved.yaml", root=str(data)) == config


def test_a_user_recipe_streams_without_code(tmp_path: Path, data: Path, tok: Tokenizer) -> None:
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    tok.save(str(tok_dir / "tokenizer.json"))
    (tmp_path / "mine.yaml").write_text(f"""
tokenizer: {tok_dir}
seq_len: 48
seed: 99
block_size: 30
lanes: 2
components:
  - {{name: speech, path: "{data}/emilia/en/*.parquet", weight: 2}}
  - {{name: web, path: "{data}/nemotron-cc/hq-actual", weight: 1}}
""")
    config = MixtureConfig.load(tmp_path / "mine.yaml")
    stream = MixtureStream(config)  # the tokenizer named in the recipe
    batches = take(stream, 6, 30)  # 180 windows = 3 blocks of 30 per lane
    assert batches[0]["input_ids"].shape == (6, 48)
    comps = np.concatenate([b["component"] for b in batches])
    assert Counter(comps.tolist()) == {0: 120, 1: 60}
    assert stream.component_tokens == {"speech": 120 * 48, "web": 60 * 48}


# -- mixing -----------------------------------------------------------------------------------------------------


def test_block_schedule_is_exact_interleaved_and_seeded() -> None:
    counts = [516, 288, 146, 50]
    a = block_schedule(counts, 0, 0, 0)
    assert np.bincount(a).tolist() == counts
    # Interleaved, not one component after another: every prefix of the block stays close to the exact shares
    # (component c's k-th window sits at (k + u_c) / n_c: within 1 + C*n_c/N windows), and no long runs.
    cum = np.cumsum(np.eye(4, dtype=int)[a], axis=0)
    ideal = np.arange(1, 1001)[:, None] * np.asarray(counts) / 1000
    assert (np.abs(cum - ideal).max(axis=0) < 1 + 4 * np.asarray(counts) / 1000).all()
    runs = np.diff(np.flatnonzero(np.diff(a, prepend=-1, append=-1)))
    assert runs.max() <= 3
    assert (a == block_schedule(counts, 0, 0, 0)).all()
    assert (a != block_schedule(counts, 0, 0, 1)).any()
    assert (a != block_schedule(counts, 1, 0, 0)).any()


def test_token_shares_equal_the_weights_per_block(data: Path, tok: Tokenizer) -> None:
    config = soda(data, seq_len=32)
    stream = MixtureStream(config, tok)
    B, blocks = 8, 3
    per_lane = B // config.lanes
    steps = blocks * config.block_size // per_lane
    batches = take(stream, B, steps)
    comps = np.stack([b["component"] for b in batches])  # [step, row]
    counts = np.asarray(config.block_counts())
    for lane in range(config.lanes):
        lane_windows = comps[:, lane * per_lane:(lane + 1) * per_lane].reshape(-1)
        for block in lane_windows.reshape(blocks, config.block_size):
            assert np.bincount(block, minlength=4).tolist() == counts.tolist()
    tokens = np.bincount(comps.reshape(-1), minlength=4) * config.seq_len
    for b in batches:  # every window is full: no padding, so window shares are token shares
        assert (b["segment_ids"] > 0).all() and b["input_ids"].shape == (B, config.seq_len)
    assert stream.component_tokens == dict(zip(config.names, tokens.tolist()))
    shares = tokens / tokens.sum()
    for name, share in zip(config.names, shares):
        assert share == pytest.approx(SPEC_WEIGHTS[name], rel=0.005)


# -- reader -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lanes", [1, 3, 4])
def test_reader_lanes_cover_every_row_once_per_epoch(data: Path, tok: Tokenizer, lanes: int) -> None:
    encoder = RowEncoder(tok)
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    for spec in COMPONENTS:
        shards = list_shards(str(data / spec.name))
        expected = Counter(tuple(ids.tolist()) for ids in encoder.encode_batch(shard_rows(data, spec.name)))
        seen: dict[int, Counter] = {0: Counter(), 1: Counter()}
        orders: dict[int, list] = {0: [], 1: []}
        for lane in range(lanes):
            reader = ComponentReader(spec.name, shards, encoder, seed=3, lane=lane, lanes=lanes)
            row: list[int] = []
            for piece in reader.pieces(10**12):
                epoch = reader.epoch  # the epoch of the row this piece comes from
                if epoch == 2:
                    break
                row += piece.tolist()
                if row[-1] == eos:
                    assert row[0] == bos and row.count(bos) == 1
                    seen[epoch][tuple(row)] += 1
                    orders[epoch].append(tuple(row))
                    row = []
        # Each epoch, all lanes together read every row of the component exactly once.
        assert seen[0] == expected, spec.name
        assert seen[1] == expected, spec.name
        assert orders[0] != orders[1], f"{spec.name}: epoch 1 must be reshuffled"


def test_shuffles_do_not_depend_on_the_numpy_version() -> None:
    # Saved stream states name positions in these permutations: pinned values catch any change to them (a NumPy
    # upgrade changing np.random's streams would otherwise make a resumed job read other rows).
    assert permutation(8, 0, 1).tolist() == [3, 0, 7, 2, 6, 1, 4, 5]
    assert uniform(2, 0, 1).tolist() == pytest.approx([0.36786192219903213, 0.8240717766421349], abs=0)
    p = permutation(1000, 7, 3)
    assert sorted(p.tolist()) == list(range(1000)) and (p != permutation(1000, 7, 4)).any()


def test_reader_shuffles_shards_and_rows(data: Path, tok: Tokenizer) -> None:
    config = soda(data, lanes=1)
    first = take(MixtureStream(config, tok), 2, 40)
    other = take(MixtureStream(dataclasses.replace(config, seed=1), tok), 2, 40)
    assert not all((a["input_ids"] == b["input_ids"]).all() for a, b in zip(first, other))
    # Shards hold rows in document order (type1, type2 of each document); one lane's first epoch reads them in
    # another order, inside each shard too.
    encoder = RowEncoder(tok)
    eos = tok.token_to_id(EOS)
    for name in ("emilia-yodas/en", "emilia/en"):
        shards = list_shards(str(data / name))
        in_file = [[tuple(x.tolist()) for x in encoder.encode_batch(
            pq.read_table(p, columns=["text"])["text"].to_pylist())] for p in shards.paths]
        reader = ComponentReader(name, shards, encoder, seed=0, lane=0, lanes=1)
        read, row = [], []
        for piece in reader.pieces(10**12):
            if reader.epoch == 1:
                break
            row += piece.tolist()
            if row[-1] == eos:
                read.append(tuple(row))
                row = []
        assert sorted(read) == sorted(r for rows in in_file for r in rows)
        for rows in in_file:
            assert [r for r in read if r in set(rows)] != rows, name


def test_directory_takes_only_finished_shards(data: Path, tmp_path: Path) -> None:
    comp = tmp_path / "emilia" / "en"
    comp.mkdir(parents=True)
    for p in sorted((data / "emilia" / "en").iterdir()):
        if p.is_file():
            (comp / p.name).write_bytes(p.read_bytes())
    (comp / "unfinished.parquet").write_bytes((comp / "shard-00000.parquet").read_bytes())  # no record beside it
    (comp / "rejects").mkdir()
    (comp / "rejects" / "x.parquet").write_bytes(b"")
    found = [Path(p).name for p in list_shards(str(comp)).paths]
    assert found == ["shard-00000.parquet", "shard-00001.parquet"]
    assert len(list_shards(f"{comp}/*.parquet").paths) == 3  # a glob takes what it matches (no record needed)
    with pytest.raises(FileNotFoundError):
        list_shards(str(tmp_path / "nothing"))


def test_fsspec_url_reads_the_same_stream(data: Path, tok: Tokenizer) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    for p in data.rglob("*"):
        if p.is_file():
            fs.pipe(f"/soda/{p.relative_to(data)}", p.read_bytes())
    local = soda(data)
    remote = dataclasses.replace(local, root="memory://soda")
    assert remote.data_files()["emilia/en"] == ["memory:///soda/emilia/en/shard-00000.parquet",
                                                "memory:///soda/emilia/en/shard-00001.parquet"]
    assert_same(take(MixtureStream(local, tok), 8, 12), take(MixtureStream(remote, tok), 8, 12))


# -- packing ----------------------------------------------------------------------------------------------------


def test_windows_are_packed_rows_with_segment_ids(data: Path, tok: Tokenizer) -> None:
    config = soda(data, seq_len=256)
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    batches = take(MixtureStream(config, tok), 8, 10)
    fresh_starts, packed = 0, 0
    for b in batches:
        assert b["input_ids"].dtype == np.int32 and b["segment_ids"].dtype == np.int32
        assert b["component"].dtype == np.int32 and b["component"].shape == (8,)
        for ids, segs in zip(b["input_ids"], b["segment_ids"]):
            assert segs[0] == 1 and (np.diff(segs) >= 0).all() and (np.diff(segs) <= 1).all()
            cuts = np.flatnonzero(np.diff(segs)) + 1  # first token of segments 2, 3, ...
            assert (ids[cuts] == bos).all() and (ids[cuts - 1] == eos).all()
            # a document boundary is exactly an EOS followed by a BOS
            assert set(np.flatnonzero((ids[:-1] == eos) & (ids[1:] == bos)) + 1) == set(cuts)
            fresh_starts += int(ids[0] == bos) + len(cuts)
            packed += len(cuts) > 0
    assert fresh_starts > 20 and packed > 5  # the checks above did meet document boundaries


def test_stream_token_stream_is_the_rows_concatenated(data: Path, tok: Tokenizer) -> None:
    # One lane, one component: the windows laid end to end are that component's rows, whole and in some order.
    config = soda(data, lanes=1, components=[ComponentConfig("emilia/en", "emilia/en", 1.0)], block_size=1)
    rows = shard_rows(data, "emilia/en")
    encoder = RowEncoder(tok)
    expected = Counter(tuple(x.tolist()) for x in encoder.encode_batch(rows))
    total = sum(len(k) for k in expected.elements())
    n = total // config.seq_len + 1
    flat = np.concatenate([b["input_ids"][0] for b in take(MixtureStream(config, tok), 1, n)])
    eos = tok.token_to_id(EOS)
    ends = np.flatnonzero(flat[:total] == eos) + 1
    got = Counter(tuple(x.tolist()) for x in np.split(flat[:total], ends) if len(x))
    assert got == expected


# -- hosts ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("hosts", "batch"), [(2, 8), (4, 8), (3, 12), (2, 6)])
def test_hosts_get_disjoint_slices_whose_union_is_the_single_host_stream(
        data: Path, tok: Tokenizer, hosts: int, batch: int) -> None:
    config = soda(data)
    single = take(MixtureStream(config, tok), batch, 15)
    streams = [MixtureStream(config, tok, process_index=h, process_count=hosts) for h in range(hosts)]
    per_host = [take(s, batch, 15) for s in streams]
    for h in range(hosts):
        assert per_host[h][0]["input_ids"].shape == (batch // hosts, config.seq_len)
    union = [{k: np.concatenate([per_host[h][i][k] for h in range(hosts)]) for k in single[0]} for i in range(15)]
    assert_same(union, single)
    totals = Counter()
    for s in streams:
        totals.update(s.component_tokens)
    assert dict(totals) == _replay(config, tok, batch, 15).component_tokens
    lanes = [[s.lane for s in host_slots(config.lanes, batch, h, hosts)] for h in range(hosts)]
    if config.lanes % hosts == 0:  # each host reads and tokenizes only its own lanes
        assert sorted(itertools.chain.from_iterable(lanes)) == list(range(config.lanes))


def _replay(config: MixtureConfig, tok: Tokenizer, batch: int, steps: int) -> MixtureStream:
    stream = MixtureStream(config, tok)
    take(stream, batch, steps)
    return stream


def test_batch_size_must_split_into_hosts_and_lanes(data: Path, tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match="smaller than the recipe's lanes"):
        next(MixtureStream(soda(data), tok).batches(2))
    with pytest.raises(ValueError, match="process_count"):
        next(MixtureStream(soda(data), tok, process_index=0, process_count=3).batches(8))


# -- resume -----------------------------------------------------------------------------------------------------


def test_resume_gives_the_uninterrupted_windows(data: Path, tok: Tokenizer, monkeypatch) -> None:
    config = soda(data, seq_len=100)
    reference = _replay(config, tok, 8, 0)
    full = take(reference, 8, 60)
    mid_row = False
    for cut in (1, 7, 23, 41):
        stream = MixtureStream(config, tok)
        take(stream, 8, cut)
        state = json.loads(json.dumps(stream.state_dict()))
        mid_row |= any(c["offset"] > 0 for lane in state["lanes"].values() for c in lane["components"].values())
        resumed = MixtureStream(config, tok)
        resumed.load_state_dict(state)
        assert resumed.epochs == stream.epochs
        reads = _count_row_group_reads(monkeypatch)
        after = take(resumed, 8, 1)
        monkeypatch.undo()
        # No replay: at most one row group per (lane, component) is read to produce the next batch.
        assert 0 < reads["read"] <= config.lanes * len(config.components)
        after += take(resumed, 8, 60 - cut - 1)
        assert_same(after, full[cut:])
        assert resumed.component_tokens == reference.component_tokens
    assert mid_row, "some cut must fall inside a row"


def _count_row_group_reads(monkeypatch) -> Counter:
    reads: Counter = Counter()
    original = pq.ParquetFile.read_row_group

    def counted(self, *args, **kwargs):
        reads["read"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counted)
    return reads


def test_state_from_another_recipe_or_changed_shards_is_refused(data: Path, tok: Tokenizer, tmp_path) -> None:
    config = soda(data)
    stream = MixtureStream(config, tok)
    take(stream, 8, 3)
    state = stream.state_dict()
    with pytest.raises(ValueError, match="different recipe"):
        MixtureStream(dataclasses.replace(config, seed=5), tok).load_state_dict(state)
    copy = tmp_path / "copy"
    make_output_dir(copy, components=(*COMPONENTS[:3], dataclasses.replace(COMPONENTS[3], shards=2)), seed=7)
    moved = MixtureStream(dataclasses.replace(config, root=str(copy)), tok)
    with pytest.raises(ValueError, match=r"in component nemotron-cc/hq-actual, its shard files are not the same "
                                         r"\(1 then, 2 now, or other names\) since this state was saved"):
        moved.load_state_dict(state)


def test_merged_host_states_resume_on_any_number_of_hosts(data: Path, tok: Tokenizer) -> None:
    config = soda(data)
    full = take(MixtureStream(config, tok), 8, 20)
    hosts = [MixtureStream(config, tok, process_index=h, process_count=2) for h in range(2)]
    for s in hosts:
        take(s, 8, 9)
    with pytest.raises(ValueError, match="no position for lane"):  # host 0's state is not host 1's
        other = MixtureStream(config, tok, process_index=1, process_count=2)
        other.load_state_dict(hosts[0].state_dict())
        next(other.batches(8))
    merged = merge_states([s.state_dict() for s in hosts])
    for count in (1, 4):
        resumed = [MixtureStream(config, tok, process_index=h, process_count=count) for h in range(count)]
        for s in resumed:
            s.load_state_dict(merged)
        parts = [take(s, 8, 11) for s in resumed]
        union = [{k: np.concatenate([p[i][k] for p in parts]) for k in full[0]} for i in range(11)]
        assert_same(union, full[9:])


def test_epochs_are_counted_and_restart_with_a_new_shuffle(data: Path, tok: Tokenizer) -> None:
    config = soda(data, seq_len=1024)
    stream = MixtureStream(config, tok)
    assert stream.epochs == dict.fromkeys(config.names, 0)
    history = []
    for _ in itertools.islice(stream.batches(8), 50):
        history.append(stream.epochs)
    for name in config.names:
        seq = [h[name] for h in history]
        assert seq == sorted(seq), name  # epochs only grow
    # Each lane has read more Nemotron tokens than the whole component holds, twice over: every lane (whose share
    # is at most the whole component) has started its third epoch at least.
    whole = sum(len(x) for x in RowEncoder(tok).encode_batch(shard_rows(data, "nemotron-cc/hq-actual")))
    per_lane = stream.component_tokens["nemotron-cc/hq-actual"] / config.lanes
    assert per_lane > 2 * whole
    assert history[-1]["nemotron-cc/hq-actual"] >= 2
    assert history[0]["yodas2/en"] == 0


# -- into trainers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_torch_dataloader_gives_the_same_batches_and_resumes(data: Path, tok: Tokenizer, workers: int) -> None:
    torch = pytest.importorskip("torch")
    config = soda(data)
    full = take(MixtureStream(config, tok, process_index=1, process_count=2), 8, 14)
    stream = MixtureStream(config, tok, process_index=1, process_count=2)
    got = list(itertools.islice(stream.torch_batches(8, num_workers=workers), 6))
    assert isinstance(got[0]["input_ids"], torch.Tensor) and got[0]["input_ids"].dtype == torch.int32
    assert_same([{k: v.numpy() for k, v in b.items()} for b in got], full[:6])
    state = json.loads(json.dumps(stream.state_dict()))
    assert state["steps"] == 6
    resumed = MixtureStream(config, tok, process_index=1, process_count=2)
    resumed.load_state_dict(state)
    assert_same(take(resumed, 8, 8), full[6:])


def test_plain_torch_dataset_yields_host_batches(data: Path, tok: Tokenizer) -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, IterableDataset

    config = soda(data)
    stream = MixtureStream(config, tok)
    dataset = stream.torch_dataset(8)
    assert isinstance(dataset, IterableDataset)
    got = list(itertools.islice(iter(DataLoader(dataset, batch_size=None)), 3))
    assert isinstance(got[0]["input_ids"], torch.Tensor)
    assert_same([{k: got[i][k].numpy() for k in ("input_ids", "segment_ids", "component")} for i in range(3)],
                take(MixtureStream(config, tok), 8, 3))


def test_dataloader_workers_split_the_host_lanes_without_overlap(data: Path, tok: Tokenizer) -> None:
    pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    config = soda(data)
    stream = MixtureStream(config, tok, process_index=0, process_count=2)  # lanes 0 and 1 of 4
    loader = DataLoader(stream.torch_dataset(8), batch_size=None, num_workers=2)
    items = list(itertools.islice(iter(loader), 6))
    assert [int(i["worker"]) for i in items] == [0, 1] * 3  # round robin: one part per worker and step
    assert [int(i["step"]) for i in items] == [1, 1, 2, 2, 3, 3]
    assert [set(i["lanes"]) for i in items[:2]] == [{"0"}, {"1"}]  # each worker runs only its own lane
    assert all(i["input_ids"].shape == (2, config.seq_len) for i in items)
    full = take(MixtureStream(config, tok, process_index=0, process_count=2), 8, 3)
    for step, batch in enumerate(full):
        np.testing.assert_array_equal(
            np.concatenate([items[2 * step]["input_ids"].numpy(), items[2 * step + 1]["input_ids"].numpy()]),
            batch["input_ids"])


def test_shards_stay_readable_by_datasets_streaming(data: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    config = soda(data)
    files = config.data_files()
    ds = datasets.load_dataset("parquet", data_files={"train": files["emilia/en"]}, streaming=True, split="train")
    rows = [r["text"] for r in ds]
    assert rows == shard_rows(data, "emilia/en")
    assert {"id", "split", "text", "corpus", "format"} <= set(next(iter(ds)))

