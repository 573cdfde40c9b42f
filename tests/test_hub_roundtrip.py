"""The Hub round trip: `sodadata push` uploads an output directory, and a recipe whose root is the pushed revision
(`root: hf://datasets/ORG/NAME@REV`, or `python -m train --data hf://...`) streams and trains from it.

The Hub is tests/local_hub.py: the real ``HfApi`` and ``HfFileSystem`` talk HTTP to a server in this process
(its docstring says why that and not a fake API or a filesystem registered for ``hf://``).
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import yaml
from local_hub import LocalHub, serving
from synthetic import SODA_LIKE, make_output_dir
from test_train_model import REPO

from sodadata.mix.mixture import MixtureConfig
from sodadata.mix.packing import MixtureStream
from sodadata.tools import hub
from sodadata.write.published import DATA_DIR, shard_path

REPO_ID = "org/soda-sample"
RECIPE = REPO / "recipes" / "soda.yaml"
# Bucketed above 2 shards here (5,000 on the Hub): yodas2 has 3 shards and is bucketed, the others are not.
COMPONENTS = tuple(replace(c, shards=3 if c.name == "yodas2/en" else c.shards) for c in SODA_LIKE)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    from synthetic import WORDS

    from sodadata.mix.tokenizer import build_tokenizer, save_tokenizer, train_small_base

    root = tmp_path_factory.mktemp("roundtrip")
    out = root / "out"
    make_output_dir(out, COMPONENTS, seed=5)
    corpus = [" ".join(WORDS[i:] + WORDS[:i]).capitalize() + "." for i in range(len(WORDS))] * 4
    save_tokenizer(build_tokenizer(train_small_base(corpus, vocab_size=400)), root / "tok")
    local_hub = LocalHub()
    mp = pytest.MonkeyPatch()
    mp.setattr(hub, "FOLDER_ENTRY_LIMIT", 2)
    mp.setenv("HF_TOKEN", "hf_local_stand_in")  # HfApi wants a token for writes; the stand-in checks none
    mp.delenv("HF_HUB_OFFLINE", raising=False)
    try:
        with serving(local_hub):
            rc = hub.push(hub.PushConfig(out=out, repo=REPO_ID, revision="v1", utterance_shards=0,
                                         retry=hub.RetryPolicy(max_attempts=1)))
    finally:
        mp.undo()
    assert rc == 0
    return {"out": out, "tok": root / "tok", "hub": local_hub, "root": root}


def test_push_writes_the_published_layout(pushed):
    files = pushed["hub"].tree(REPO_ID, "v1")
    data = sorted(p for p in files if p.startswith(f"{DATA_DIR}/"))
    for c in COMPONENTS:
        stems = sorted(p.stem for p in (pushed["out"] / c.name).glob("*.parquet"))
        assert len(stems) == c.shards
        want = sorted(shard_path(c.name, s, bucketed=c.shards > 2) for s in stems)
        assert [p for p in data if p.startswith(f"{DATA_DIR}/{c.name}/")] == want
    assert all(re.fullmatch(r"data/yodas2/en/[0-9a-f]{2}/[^/]+\.parquet", p) for p in data if "yodas2" in p)
    assert "README.md" in files and "records/yodas2/en/records.jsonl" in files
    assert files[data[0]] == (pushed["out"] / data[0].split("/", 1)[1]).read_bytes()  # the shard itself
    assert not pushed["hub"].tree(REPO_ID, "main").get(data[0])  # pushed to the revision asked for


def test_a_recipe_rooted_at_the_pushed_revision_streams_what_the_output_streams(pushed, tmp_path):
    """`root: hf://datasets/ORG/NAME@v1` finds every component under data/ (bucketed or not) and gives, batch for
    batch, the stream the output directory gives: the same shards in the same order."""
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe.update(root=f"hf://datasets/{REPO_ID}@v1", tokenizer=str(pushed["tok"]), seq_len=64, lanes=4)
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with serving(pushed["hub"]):
        remote = MixtureConfig.load(path)
        urls = remote.data_files()
        assert urls["yodas2/en"][0].startswith(f"hf://datasets/{REPO_ID}@v1/data/yodas2/en/")
        assert {k: len(v) for k, v in urls.items()} == {c.name: c.shards for c in COMPONENTS}
        hub_batches = [b for _, b in zip(range(3), MixtureStream(remote).batches(8))]
    local = MixtureConfig.load(path, root=str(pushed["out"]))
    local_batches = [b for _, b in zip(range(3), MixtureStream(local).batches(8))]
    for a, b in zip(hub_batches, local_batches):
        for key in ("input_ids", "segment_ids", "component"):
            np.testing.assert_array_equal(a[key], b[key])
    assert len({int(c) for b in hub_batches for c in b["component"]}) == len(COMPONENTS)


@pytest.mark.slow
def test_train_takes_a_step_from_the_pushed_revision(pushed):
    """`python -m train --data hf://datasets/ORG/NAME@v1` (in this process, where the stand-in Hub is served)."""
    from train.cli import config_from_args, parser
    from train.trainer import train

    args = parser().parse_args(["--recipe", str(RECIPE), "--data", f"hf://datasets/{REPO_ID}@v1", "--tokenizer",
                                str(pushed["tok"]), "--model", "tiny", "--steps", "1", "--batch-size", "16",
                                "--seq-len", "32", "--loss-chunk-tokens", "128"])
    with serving(pushed["hub"]) as local_hub:
        result = train(config_from_args(args))
    assert result.end_step == 1 and np.isfinite(result.losses[0])
    assert sum(result.component_tokens.values()) > 0.9 * 16 * 32
    assert set(result.component_tokens) == {c.name for c in COMPONENTS}
    assert any(r.startswith(f"GET /datasets/{REPO_ID}/resolve/") for r in local_hub.requests)  # read from the Hub
