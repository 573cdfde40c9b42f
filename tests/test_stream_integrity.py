"""Stream integrity (issue 13 point 6): a stream state names its shards by content, so a resume onto a shard replaced
under the same name is refused with one line, while the same shards anywhere else resume exactly."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from synthetic import WORDS, ComponentSpec, make_output_dir
from tokenizers import Tokenizer

from sodadata.mix.mixture import ComponentConfig, MixtureConfig
from sodadata.mix.packing import MixtureStream
from sodadata.mix.streaming import list_shards
from sodadata.mix.tokenizer import build_tokenizer, train_small_base

SPECS = (ComponentSpec("emilia/en", shards=3, docs_per_shard=3, utterances=(1, 2), seconds=(0.5, 1.5)),
         ComponentSpec("nemotron-cc/hq-actual", shards=2, docs_per_shard=6, text_only=True))


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return build_tokenizer(train_small_base([" ".join(WORDS)] * 4, vocab_size=300))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    make_output_dir(tmp_path / "out", components=SPECS, seed=3)
    return tmp_path / "out"


def mixture(root: Path, emilia_path: str = "emilia/en") -> MixtureConfig:
    return MixtureConfig([ComponentConfig("emilia/en", emilia_path, 0.7),
                          ComponentConfig("nemotron-cc/hq-actual", "nemotron-cc/hq-actual", 0.3)],
                         tokenizer="unused", seq_len=32, lanes=2, block_size=10, root=str(root))


def steps(stream: MixtureStream, n: int) -> list[np.ndarray]:
    return [b["input_ids"] for b in itertools.islice(stream.batches(4), n)]


def test_the_same_shards_elsewhere_resume_exactly(data: Path, tok: Tokenizer, tmp_path: Path) -> None:
    whole = steps(MixtureStream(mixture(data), tok), 6)
    first = MixtureStream(mixture(data), tok)
    steps(first, 3)
    state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint stores it
    assert state["version"] == 2 and len(state["shards"]["emilia/en"]["shards"]) == 3
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)  # same contents, other paths (e.g. another machine's disk)
    resumed = MixtureStream(mixture(moved), tok)
    resumed.load_state_dict(state)
    for a, b in zip(steps(resumed, 3), whole[3:]):
        np.testing.assert_array_equal(a, b)


def _replace_rows(data: Path) -> None:
    """shard-00000's Parquet replaced by another shard's under its name; its record left as it was."""
    shutil.copyfile(data / "emilia/en/shard-00001.parquet", data / "emilia/en/shard-00000.parquet")


def _rewrite_record(data: Path) -> None:
    """shard-00000 rebuilt: its record rewritten (a new finish time), the rows byte for byte the same."""
    path = data / "emilia/en/shard-00000.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "finished_at": "2026-12-02T10:00:00Z"}))


@pytest.mark.parametrize("replace", [_replace_rows, _rewrite_record])
def test_a_shard_replaced_under_the_same_name_is_refused(data: Path, tok: Tokenizer, replace) -> None:
    stream = MixtureStream(mixture(data), tok)
    steps(stream, 2)
    state = stream.state_dict()
    replace(data)
    with pytest.raises(ValueError) as err:
        MixtureStream(mixture(data), tok).load_state_dict(state)
    assert str(err.value) == ("cannot resume the stream exactly: in component emilia/en, shard-00000.parquet was "
                              "replaced under the same name (its size, record or content differ) since this state "
                              "was saved")


def test_a_glob_without_records_is_identified_by_the_parquet_footer(data: Path, tok: Tokenizer) -> None:
    config = mixture(data, emilia_path="emilia/en/*.parquet")
    stream = MixtureStream(config, tok)
    steps(stream, 2)
    state = stream.state_dict()
    for record in (data / "emilia/en").glob("*.json"):
        record.unlink()  # a published copy may carry no records: the glob still lists the Parquet files
    MixtureStream(config, tok).load_state_dict(state)  # records are not part of a glob's identity
    _replace_rows(data)
    with pytest.raises(ValueError, match=r"shard-00000\.parquet was replaced under the same name"):
        MixtureStream(config, tok).load_state_dict(state)


def test_a_state_of_the_name_only_format_is_refused(data: Path, tok: Tokenizer) -> None:
    stream = MixtureStream(mixture(data), tok)
    state = {**stream.state_dict(), "version": 1}
    with pytest.raises(ValueError, match=r"^stream state version 1 is not 2 \(saved before shards were identified "
                                         r"by content\): it cannot be resumed exactly by this version$"):
        MixtureStream(mixture(data), tok).load_state_dict(state)


MADE_BY = {"format_version": 2, "codec": {"id": "kyutai/mimi", "revision": "a" * 40, "weights_sha256": None,
                                          "random": False},
           "dtype": "float32", "device": "cpu", "codebooks": 8, "formats": ["text_first", "audio_first"],
           "text_rule": 2, "params": {"max_utterance_seconds": 600.0}}


def _set_made_by(data: Path, made_by: dict[str, dict | None]) -> None:
    """The emilia/en records' made_by, by stem (None: a record made before format 2, without the key)."""
    for stem, value in made_by.items():
        path = data / "emilia/en" / f"{stem}.json"
        record = {k: v for k, v in json.loads(path.read_text()).items() if k != "made_by"}
        path.write_text(json.dumps(record if value is None else {**record, "made_by": value}))


def test_a_component_whose_shards_differ_in_made_by_is_refused(data: Path, tok: Tokenizer) -> None:
    random_codec = {**MADE_BY, "codec": {**MADE_BY["codec"], "id": "tiny-random", "revision": None, "random": True}}
    _set_made_by(data, {"shard-00000": MADE_BY, "shard-00001": random_codec, "shard-00002": MADE_BY})
    with pytest.raises(ValueError) as err:
        MixtureStream(mixture(data), tok)
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(f"component emilia/en ({data}/emilia/en): shards differ in made_by: ")
    assert "codec.id: tiny-random != kyutai/mimi" in line and "codec.random: true != false" in line
    assert "e.g. shard-00001 and shard-00000" in line
    # one record without made_by among records with it: unknown is not the same either
    _set_made_by(data, {"shard-00001": None})
    with pytest.raises(ValueError, match=r"^component emilia/en .*: 1 of 3 shards have no made_by"):
        MixtureStream(mixture(data), tok)
    # made one way: the stream runs
    _set_made_by(data, {"shard-00001": MADE_BY})
    assert len(steps(MixtureStream(mixture(data), tok), 1)) == 1


def test_a_glob_over_an_output_root_skips_tool_and_reject_folders(data: Path) -> None:
    """``root/**/*.parquet`` would otherwise also read push's staged copies (``_hub``) and the reject lists."""
    staged = data / "_hub" / "org--name" / "data" / "emilia" / "en"
    staged.mkdir(parents=True)
    shutil.copyfile(data / "emilia/en/shard-00000.parquet", staged / "shard-00000.parquet")
    names = sorted(Path(p).relative_to(data).as_posix() for p in list_shards(f"{data}/**/*.parquet").paths)
    assert names == [f"emilia/en/shard-0000{k}.parquet" for k in range(3)] + [
        f"nemotron-cc/hq-actual/shard-0000{k}.parquet" for k in range(2)]
    assert (data / "emilia/en/rejects/shard-00000.parquet").exists()  # there, and not listed
    # a location that names a tool folder itself is taken as given
    assert len(list_shards(f"{staged}/*.parquet").paths) == 1
