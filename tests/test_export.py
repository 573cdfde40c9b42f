"""``sodadata export levanter``: the recipe as a Levanter / Marin mixture data config, read back and checked."""

from __future__ import annotations

import glob
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from synthetic import make_output_dir

from sodadata.cli import main as cli
from sodadata.mixture import MixtureConfig
from sodadata.streaming import list_shards

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "soda.yaml"

# Field names of Levanter's LMMixtureDatasetConfig / LMTaskConfig and of a URL source config
# (levanter/src/levanter/data/text.py): the export must use no other key, or draccus refuses the config.
LEVANTER_MIXTURE_FIELDS = {
    "tokenizer", "vocab_size", "cache_dir", "cache_options", "enforce_eos", "auto_build_caches", "chat_template",
    "ignore_token_id", "shuffle", "permutation_type", "block_cross_document_attention", "configs", "train_weights",
    "stop_strategy", "target_budget", "experiment_budget", "mixture_block_size",
}
LEVANTER_SOURCE_FIELDS = {"tags", "cache_dir", "format", "train_urls", "validation_urls"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "out"
    make_output_dir(out, seed=5)
    # A shard without its record (a task that failed after writing Parquet): not finished.
    unfinished = out / "emilia" / "en" / "shard-00009.parquet"
    unfinished.write_bytes((out / "emilia" / "en" / "shard-00000.parquet").read_bytes())
    return out


def export(capsys, *args: str) -> tuple[int, str, str]:
    rc = cli(["export", "levanter", *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_levanter_config_matches_the_recipe(data, capsys):
    rc, out, _ = export(capsys, str(RECIPE), "--data", str(data))
    assert rc == 0
    cfg = yaml.safe_load(out)["data"]
    recipe = MixtureConfig.load(RECIPE, root=str(data))
    assert set(cfg) <= LEVANTER_MIXTURE_FIELDS
    assert cfg["tokenizer"] == recipe.tokenizer == "soda-research/marin-mimi-bpe-8cb-16k-tokenizer"
    assert cfg["enforce_eos"] is False  # rows end with <|end_of_text|> already
    assert list(cfg["configs"]) == recipe.names == list(cfg["train_weights"])
    assert cfg["train_weights"] == {c.name: c.weight for c in recipe.components}
    assert sum(cfg["train_weights"].values()) == pytest.approx(1.0, abs=1e-8)  # SPEC §4 shares
    assert "max_seq_len to 4096" in out  # the window length travels as an instruction (a model setting there)
    for name, component in cfg["configs"].items():
        assert set(component) <= LEVANTER_SOURCE_FIELDS
        assert component["format"] == {"type": "text", "text_key": "text"}
        # The glob matches exactly the shards of the component (not rejects/), all holding a `text` column.
        (pattern,) = component["train_urls"]
        files = sorted(glob.glob(pattern))
        expected = sorted(str(p) for p in (data / name).glob("*.parquet"))
        assert files == expected and files
        assert not any("rejects" in f for f in files)
        for f in files:
            assert pq.read_schema(f).field("text") is not None


def test_listed_shards_are_the_finished_ones(data, capsys):
    rc, out, _ = export(capsys, str(RECIPE), "--data", str(data), "--list-shards")
    assert rc == 0
    cfg = yaml.safe_load(out)["data"]
    recipe = MixtureConfig.load(RECIPE, root=str(data))
    for c in recipe.components:
        urls = cfg["configs"][c.name]["train_urls"]
        assert urls == list_shards(recipe.component_location(c)).urls()
        assert all(Path(u).with_suffix(".json").is_file() for u in urls)
    assert not any(u.endswith("shard-00009.parquet") for u in cfg["configs"]["emilia/en"]["train_urls"])
    # ...whereas the glob form would pick the unfinished one up: that is what --list-shards is for.
    rc, out, _ = export(capsys, str(RECIPE), "--data", str(data))
    (pattern,) = yaml.safe_load(out)["data"]["configs"]["emilia/en"]["train_urls"]
    assert any(f.endswith("shard-00009.parquet") for f in glob.glob(pattern))


def test_urls_and_local_tokenizer(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text("{}")  # export only locates it: Levanter loads it
    recipe.write_text(yaml.safe_dump({
        "tokenizer": str(tok), "seq_len": 2048, "lanes": 2,
        "components": [{"name": "a", "path": "hf://datasets/ORG/NAME@abc123/emilia/en/*.parquet", "weight": 2},
                       {"name": "b", "path": "b/en", "weight": 1}],
    }))
    out_file = tmp_path / "levanter.yaml"
    rc, out, _ = export(capsys, str(recipe), "--data", "gs://bucket/sodadata", "--out", str(out_file),
                        "--cache-dir", "gs://bucket/cache")
    assert rc == 0 and out == ""
    cfg = yaml.safe_load(out_file.read_text())["data"]
    assert cfg["configs"]["a"]["train_urls"] == ["hf://datasets/ORG/NAME@abc123/emilia/en/*.parquet"]
    assert cfg["configs"]["b"]["train_urls"] == ["gs://bucket/sodadata/b/en/*.parquet"]
    assert cfg["train_weights"] == {"a": 2.0, "b": 1.0}
    assert cfg["tokenizer"] == str(tok.resolve()) and cfg["cache_dir"] == "gs://bucket/cache"
    assert "max_seq_len to 2048" in out_file.read_text()
    (tok / "tokenizer.json").unlink()  # a folder without the file is not a tokenizer, nor a Hub id
    rc, _, err = export(capsys, str(recipe), "--data", "gs://bucket/sodadata")
    assert rc == 1 and f"no tokenizer.json in {tok}" in err


def test_errors(tmp_path, capsys):
    rc, _, err = export(capsys, str(RECIPE), "--data", str(tmp_path / "missing"), "--list-shards")
    assert rc == 1 and "no finished Parquet shards" in err
    rc, _, err = export(capsys, str(tmp_path / "nope.yaml"))
    assert rc == 1 and "nope.yaml" in err
    with pytest.raises(SystemExit):
        cli(["export", "megatron", str(RECIPE)])
