"""The shared pipeline with small in-test recipes: contiguous documents, duplicate ids, text rows, errors."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.parquet as pq
import pytest
from fixtures import speechlike

from sodadata.encode.codec import CodecConfig
from sodadata.read.recipe import RawUtterance, Recipe, Reject, ShardError, ShardTask, SourceFile, TextRecord
from sodadata.run.pipeline import PipelineConfig, prefetch, run_task
from sodadata.write.shards import ShardPaths

CODEC = CodecConfig(codec="tiny-random")


@dataclass(frozen=True)
class ListRecipe(Recipe):
    items: tuple = ()
    contiguous: bool = False
    kind_: str = "speech"

    name = "list"

    @property
    def kind(self):  # type: ignore[override]
        return self.kind_

    @property
    def contiguous_documents(self):  # type: ignore[override]
        return self.contiguous

    @classmethod
    def from_args(cls, args):
        raise NotImplementedError

    def tasks(self):
        return [ShardTask("test/xx", "s0", "test-s0", (SourceFile("mem://s0", 0),))]

    def read(self, task):
        for item in self.items:
            if isinstance(item, Exception):
                raise item
            yield item


def utt(doc: str, i: int, text: str = "words", seconds: float = 0.5) -> RawUtterance:
    return RawUtterance(id=f"{doc}_W{i}", doc_id=doc, order=(i,), text=text, audio=speechlike(seconds, hash((doc, i)) % 1000),
                        sample_rate=24000)


def run(recipe, tmp_path, **kw):
    task = recipe.tasks()[0]
    record = run_task(recipe, task, PipelineConfig(out=str(tmp_path), codec=CODEC, **kw))
    rows = pq.read_table(ShardPaths(tmp_path, task.component, task.stem).parquet).to_pylist()
    rejects = pq.read_table(ShardPaths(tmp_path, task.component, task.stem).rejects).to_pylist()
    return record, rows, rejects


def test_contiguous_documents_are_written_in_order_of_appearance(tmp_path):
    items = (utt("zeta", 1), utt("zeta", 0), utt("alpha", 0), utt("mid", 0), utt("mid", 1))
    record, rows, _ = run(ListRecipe(items=items, contiguous=True), tmp_path, bucket_seconds=0.6)
    assert [r["id"] for r in rows] == ["zeta_type1", "zeta_type2", "alpha_type1", "alpha_type2", "mid_type1", "mid_type2"]
    assert record["documents"] == 3 and record["written"] == 5
    # inside a document, utterances are in `order`, whatever the read order
    assert rows[0]["text"].index("<|text_start|>words") >= 0
    import json

    assert [u["id"] for u in json.loads(rows[0]["metadata"])["utterances"]] == ["zeta_W0", "zeta_W1"]


def test_non_contiguous_documents_are_gathered_and_sorted(tmp_path):
    items = (utt("b", 1), utt("a", 0), utt("b", 0))
    record, rows, _ = run(ListRecipe(items=items), tmp_path)
    assert [r["id"] for r in rows] == ["a_type1", "a_type2", "b_type1", "b_type2"]
    assert rows[2]["n_utterances"] == 2 and record["documents"] == 2


def test_a_document_that_comes_back_breaks_the_contiguity_promise(tmp_path):
    items = (utt("a", 0), utt("b", 0), utt("a", 1))
    with pytest.raises(RuntimeError, match="came back"):
        run(ListRecipe(items=items, contiguous=True), tmp_path, bucket_seconds=0.1)
    assert not list(tmp_path.rglob("*.parquet")), "nothing may be committed for a failed task"


def test_every_item_is_written_or_rejected_with_a_reason(tmp_path):
    nan = utt("a", 2)
    nan.audio = nan.audio.copy()
    nan.audio[10] = float("nan")
    empty = utt("a", 4)
    empty.audio = empty.audio[:0]
    items = (utt("a", 0, text="  padded  "), utt("a", 0), utt("a", 1, text="has <|text_end|> marker"), nan,
             Reject("gone", "missing_audio", "no mp3"), utt("a", 3, text="   "), empty)
    record, rows, rejects = run(ListRecipe(items=items), tmp_path)
    assert {r["id"]: r["reason"] for r in rejects} == {
        "a_W0": "duplicate_id", "a_W1": "transcript_has_marker", "a_W2": "nonfinite_audio", "gone": "missing_audio",
        "a_W3": "empty_transcript", "a_W4": "empty_audio",
    }
    assert record["read"] == 7 and record["written"] == 1 and record["rejected"] == 6
    assert rows[0]["text"].startswith("<|begin_of_text|><|text_start|>padded<|text_end|>")


def test_text_recipes_write_rows_and_reject_bad_records(tmp_path):
    items = (TextRecord("r1", "  keep  spaces \u2028 as given ", {"url": "u"}), TextRecord("r2", ""),
             TextRecord("r3", "fake \ue000 audio"), TextRecord("r1", "dup"), TextRecord("r4", "<|end_of_text|> x"))
    record, rows, rejects = run(ListRecipe(items=items, kind_="text"), tmp_path)
    assert [r["text"] for r in rows] == ["<|begin_of_text|>  keep  spaces \u2028 as given <|end_of_text|>"]
    assert rows[0]["format"] == "text" and rows[0]["metadata"] == '{"url": "u"}'
    assert {r["id"]: r["reason"] for r in rejects} == {
        "r2": "empty_text", "r3": "audio_range_character", "r1": "duplicate_id", "r4": "text_has_marker"}
    assert record["codec"] is None and record["read"] == 5


def test_a_shard_error_midway_commits_nothing(tmp_path):
    items = (utt("a", 0), ShardError("truncated archive"))
    with pytest.raises(ShardError):
        run(ListRecipe(items=items), tmp_path)
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert not list(tmp_path.rglob(".*tmp-*")), "temporary files are removed on failure"


def test_prefetch_reraises_in_the_consumer_and_keeps_order():
    def gen():
        yield from range(5)
        raise ValueError("boom")

    got = []
    with pytest.raises(ValueError, match="boom"):
        for x in prefetch(gen(), depth=2):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]
