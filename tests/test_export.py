"""``sodadata export levanter``: the recipe as a Levanter / Marin train_lm config, read back and checked.

These tests read the YAML back with PyYAML; tests/test_levanter.py parses the same exports with Levanter's own
config classes (both schemas) and tokenizes rows with Levanter's own preprocessor.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from synthetic import WORDS, make_output_dir

from sodadata.cli import main as cli
from sodadata.mix.export import SODA_NAMES
from sodadata.mix.mixture import MixtureConfig
from sodadata.mix.streaming import list_shards
from sodadata.mix.tokenizer import (
    PUBLISHED,
    build_tokenizer,
    load_tokenizer,
    save_tokenizer,
    train_small_base,
)
from sodadata.write.document import BOS, EOS, TEXT_END, TEXT_START

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "soda.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "out"
    make_output_dir(out, seed=5)
    # A shard without its record (a task that failed after writing Parquet): not finished.
    unfinished = out / "emilia" / "en" / "shard-00009.parquet"
    unfinished.write_bytes((out / "emilia" / "en" / "shard-00000.parquet").read_bytes())
    # A held-out set in the same layout, for the recipe's validation list.
    (out / "librispeech").mkdir()
    for f in (out / "emilia" / "en").glob("shard-00000.*"):
        (out / "librispeech" / "dev-clean").mkdir(exist_ok=True)
        (out / "librispeech" / "dev-clean" / f.name).write_bytes(f.read_bytes())
    return out


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    """A tokenizer built the SPEC way (BOS-prepending post-processor, BOS declared), saved as a directory."""
    corpus = [" ".join(WORDS[i:] + WORDS[:i]).capitalize() + "." for i in range(len(WORDS))] * 4
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    save_tokenizer(build_tokenizer(train_small_base(corpus, vocab_size=400)), out)
    return out


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, tok_dir: Path) -> Path:
    """recipes/soda.yaml with a local tokenizer and LibriSpeech dev-clean as its validation set."""
    config = MixtureConfig.load(RECIPE).to_dict()
    config |= {"tokenizer": str(tok_dir),
               "validation": [{"name": "librispeech/dev-clean", "path": "librispeech/dev-clean"}]}
    path = tmp_path_factory.mktemp("recipe") / "soda-dev.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def lev_tok(tmp_path_factory, tok_dir: Path, data: Path) -> Path:
    """The rows-only tokenizer, as `--tokenizer-out` writes it (once: the other tests name it with --tokenizer).

    Made from a local build with --base-tokenizer, so recipes/soda.yaml's Hub tokenizer is never downloaded."""
    out = tmp_path_factory.mktemp("lev") / "levanter-tokenizer"
    assert cli(["export", "levanter", str(RECIPE), "--data", str(data), "--base-tokenizer", str(tok_dir),
                "--tokenizer-out", str(out)]) == 0
    return out


def export(capsys, *args: str) -> tuple[int, str, str]:
    rc = cli(["export", "levanter", *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_current_schema_matches_the_recipe(data, recipe, lev_tok, capsys):
    rc, out, _ = export(capsys, str(recipe), "--data", str(data), "--tokenizer", str(lev_tok))
    assert rc == 0
    cfg = yaml.safe_load(out)
    mixture = MixtureConfig.load(recipe, root=str(data))
    assert cfg["model"] == {"type": "qwen3", "max_seq_len": 4096} and cfg["train_seq_len"] == 4096
    data_cfg = cfg["data"]
    assert "configs" not in data_cfg  # the 1.2 key: current Levanter refuses it
    assert data_cfg["tokenizer"] == str(lev_tok.resolve())
    assert data_cfg["enforce_eos"] is False  # rows end with <|end_of_text|> already
    assert data_cfg["mixture_block_size"] == mixture.block_size == 1000
    components = data_cfg["components"]
    assert list(components) == [*mixture.names, "librispeech/dev-clean"] == list(data_cfg["train_weights"])
    assert data_cfg["train_weights"] == {**{c.name: c.weight for c in mixture.components},
                                         "librispeech/dev-clean": 0.0}
    for name, component in components.items():
        assert set(component) == {"source", "format"}  # the format belongs to the component, not its source
        assert component["format"] == {"type": "text", "text_key": "text"}
        source = component["source"]
        split = "validation_urls" if name == "librispeech/dev-clean" else "train_urls"
        assert set(source) == {"type", split} and source["type"] == "url"
        # The glob matches exactly the shards of the component (not rejects/), all holding a `text` column.
        (pattern,) = source[split]
        files = sorted(glob.glob(pattern))
        assert files == sorted(str(p) for p in (data / name).glob("*.parquet")) and files
        assert not any("rejects" in f for f in files)
        for f in files:
            assert pq.read_schema(f).field("text") is not None


def test_schema_1_2_keeps_configs_and_model_seq_len(data, recipe, lev_tok, capsys):
    rc, out, _ = export(capsys, str(recipe), "--data", str(data), "--levanter", "1.2", "--tokenizer", str(lev_tok))
    assert rc == 0
    cfg = yaml.safe_load(out)
    assert cfg["model"] == {"type": "qwen3", "seq_len": 4096} and "train_seq_len" not in cfg
    assert "model.seq_len = 4096" in out  # the header names 1.2's field, not current Levanter's
    configs = cfg["data"]["configs"]
    assert "components" not in cfg["data"]
    assert set(configs["yodas2/en"]) == {"train_urls", "format"}
    assert set(configs["librispeech/dev-clean"]) == {"validation_urls", "format"}
    assert cfg["data"]["train_weights"]["librispeech/dev-clean"] == 0.0


def test_rows_only_tokenizer_keeps_every_id_and_adds_no_bos(tok_dir, lev_tok):
    spec, rows_only = load_tokenizer(tok_dir), load_tokenizer(lev_tok)
    assert rows_only.get_vocab(with_added_tokens=True) == spec.get_vocab(with_added_tokens=True)
    row = f"{BOS}{TEXT_START}the model learns{TEXT_END}{EOS}"
    ids = rows_only.encode(row, add_special_tokens=True).ids  # what a trainer asking for special tokens gets
    assert ids == spec.encode(row, add_special_tokens=False).ids
    assert ids[0] == spec.token_to_id(BOS) and ids[1] != ids[0] and ids[-1] == spec.token_to_id(EOS)
    assert spec.encode(row, add_special_tokens=True).ids[:2] == [ids[0]] * 2  # the SPEC tokenizer doubles it
    config = json.loads((lev_tok / "tokenizer_config.json").read_text())
    assert config["bos_token"] is None and config["eos_token"] == EOS
    assert spec.post_processor is not None and rows_only.post_processor is None


def test_soda_names_and_blocks(data, recipe, lev_tok, capsys):
    rc, out, _ = export(capsys, str(recipe), "--data", str(data), "--names", "soda", "--tokenizer", str(lev_tok))
    assert rc == 0
    data_cfg = yaml.safe_load(out)["data"]
    assert list(data_cfg["components"]) == [
        "yodas2/en", "Emilia-YODAS/EN", "Emilia/EN", "nemotron_cc/hq_actual", "librispeech/dev-clean"]
    assert data_cfg["mixture_block_size"] == 2048
    mixture = MixtureConfig.load(recipe, root=str(data))
    for c in mixture.components:  # same shards and weight, SODA's name
        renamed = SODA_NAMES[c.name]
        assert data_cfg["train_weights"][renamed] == c.weight
        assert data_cfg["components"][renamed]["source"]["train_urls"] == [f"{data}/{c.path}/*.parquet"]


def test_listed_shards_are_the_finished_ones(data, recipe, lev_tok, capsys):
    args = (str(recipe), "--data", str(data), "--tokenizer", str(lev_tok))
    rc, out, _ = export(capsys, *args, "--list-shards")
    assert rc == 0
    components = yaml.safe_load(out)["data"]["components"]
    mixture = MixtureConfig.load(recipe, root=str(data))
    for c in mixture.components:
        urls = components[c.name]["source"]["train_urls"]
        assert urls == list_shards(mixture.component_location(c)).urls()
        assert all(Path(u).with_suffix(".json").is_file() for u in urls)
    assert not any(u.endswith("shard-00009.parquet") for u in components["emilia/en"]["source"]["train_urls"])
    # ...whereas the glob form would pick the unfinished one up: that is what --list-shards is for.
    rc, out, _ = export(capsys, *args)
    (pattern,) = yaml.safe_load(out)["data"]["components"]["emilia/en"]["source"]["train_urls"]
    assert any(f.endswith("shard-00009.parquet") for f in glob.glob(pattern))


def test_urls_and_a_tokenizer_written_before(tmp_path, lev_tok, capsys, caplog):
    user_recipe = tmp_path / "r.yaml"
    user_recipe.write_text(yaml.safe_dump({
        "tokenizer": "unused", "seq_len": 2048, "lanes": 2, "block_size": 30,
        "components": [{"name": "a", "path": "hf://datasets/ORG/NAME@abc123/emilia/en/*.parquet", "weight": 2},
                       {"name": "b", "path": "b/en", "weight": 1}],
    }))
    out_file = tmp_path / "levanter.yaml"
    rc, out, _ = export(capsys, str(user_recipe), "--data", "gs://bucket/sodadata", "--out", str(out_file),
                        "--cache-dir", "gs://bucket/cache", "--tokenizer", str(lev_tok))
    assert rc == 0 and out == ""
    cfg = yaml.safe_load(out_file.read_text())
    components = cfg["data"]["components"]
    assert components["a"]["source"]["train_urls"] == ["hf://datasets/ORG/NAME@abc123/emilia/en/*.parquet"]
    assert components["b"]["source"]["train_urls"] == ["gs://bucket/sodadata/b/en/*.parquet"]
    assert cfg["data"]["train_weights"] == {"a": 2.0, "b": 1.0}
    assert cfg["data"]["tokenizer"] == str(lev_tok.resolve())
    assert cfg["data"]["cache_dir"] == "gs://bucket/cache"
    assert (cfg["model"]["max_seq_len"], cfg["train_seq_len"], cfg["data"]["mixture_block_size"]) == (2048, 2048, 30)
    # A remote tokenizer is taken as named (it cannot be checked from here), with a warning.
    rc, out, _ = export(capsys, str(user_recipe), "--tokenizer", "gs://bucket/levanter-tokenizer")
    assert rc == 0 and yaml.safe_load(out)["data"]["tokenizer"] == "gs://bucket/levanter-tokenizer"
    assert "two BOS" in caplog.text


def test_errors(tmp_path, recipe, data, tok_dir, lev_tok, capsys):
    new_tok = tmp_path / "lev-tok"
    rc, _, err = export(capsys, str(recipe), "--data", str(tmp_path / "missing"), "--list-shards",
                        "--tokenizer-out", str(new_tok))
    assert rc == 2 and "no finished Parquet shards" in err
    assert not new_tok.exists()  # refused before anything was written
    rc, _, err = export(capsys, str(tmp_path / "nope.yaml"), "--tokenizer-out", str(new_tok))
    assert rc == 2 and "nope.yaml" in err
    # The SPEC tokenizer itself would give every row two BOS in Levanter.
    rc, _, err = export(capsys, str(recipe), "--data", str(data), "--tokenizer", str(tok_dir))
    assert rc == 2 and "second BOS" in err and len(err.strip().splitlines()) == 1
    rc, _, err = export(capsys, str(recipe), "--data", str(data), "--tokenizer", PUBLISHED)  # so does the published one
    assert rc == 2 and "second BOS" in err
    # A folder without tokenizer.json is not a tokenizer (nor a Hub id); nor is a path that is not there.
    (tmp_path / "empty").mkdir()
    rc, _, err = export(capsys, str(recipe), "--data", str(data), "--tokenizer", str(tmp_path / "empty"))
    assert rc == 2 and f"no tokenizer.json in {tmp_path / 'empty'}" in err
    rc, _, err = export(capsys, str(recipe), "--data", str(data), "--tokenizer", str(tmp_path / "nowhere"))
    assert rc == 2 and "no such file or directory" in err
    # SODA's names only cover SODA's components.
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"components": [{"name": "mls/en", "path": "mls/en", "weight": 1}]}))
    rc, _, err = export(capsys, str(other), "--names", "soda", "--tokenizer-out", str(new_tok))
    assert rc == 2 and "mls/en" in err
    with pytest.raises(SystemExit):  # a tokenizer choice is required
        cli(["export", "levanter", str(recipe)])
    with pytest.raises(SystemExit):
        cli(["export", "levanter", str(recipe), "--tokenizer", str(lev_tok), "--base-tokenizer", str(tok_dir)])
    with pytest.raises(SystemExit):
        cli(["export", "megatron", str(RECIPE), "--tokenizer-out", str(new_tok)])
