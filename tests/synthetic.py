"""Synthetic *output* directories: finished shards of several components, as the recipes write them.

For tests of everything downstream of the recipes (mixture, training, stats, push, validate, inspect) that need
many realistic shards fast, without running a codec. Audio spans are random but well-formed codes; documents
and rows are built with the same functions the pipeline uses, and records are consistent with the shards.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sodadata.encode.codes import codes_to_chars
from sodadata.locations import write_json_atomic
from sodadata.write.document import (
    AUDIO_FIRST,
    TEXT_FIRST,
    TEXT_ONLY,
    TEXT_RULE_VERSION,
    EncodedUtterance,
    format_speech_row,
    format_text_row,
)
from sodadata.write.made_by import FORMAT_VERSION
from sodadata.write.shards import (
    RECORD_VERSION,
    REJECT_SCHEMA,
    ShardPaths,
    ShardWriter,
    shard_file_names,
)

WORDS = "the a speech model learns from audio and text tokens of many hours in open data sets".split()


@dataclass(frozen=True)
class ComponentSpec:
    name: str  # e.g. "emilia/en"
    shards: int = 2
    docs_per_shard: int = 4
    utterances: tuple[int, int] = (1, 4)  # per document, inclusive
    seconds: tuple[float, float] = (1.0, 4.0)  # per utterance
    text_only: bool = False


SODA_LIKE = (
    ComponentSpec("yodas2/en", shards=2, docs_per_shard=3, utterances=(4, 10), seconds=(2.0, 6.0)),
    ComponentSpec("emilia-yodas/en", shards=2, docs_per_shard=6, utterances=(1, 4)),
    ComponentSpec("emilia/en", shards=2, docs_per_shard=6, utterances=(1, 3)),
    ComponentSpec("nemotron-cc/hq-actual", shards=1, docs_per_shard=20, text_only=True),
)


# What made a shard (SPEC §2), as a real run with the real codec records it. The codes here are random stand-ins, but
# the tools downstream (push, validate, decode) must see an output made by a real codec; tests of random or mixed
# made_by change the records themselves. The revision is a made-up 40-hex commit: nothing here loads the codec.
SPEECH_MADE_BY = {
    "format_version": FORMAT_VERSION,
    "codec": {"id": "kyutai/mimi", "revision": "0123456789abcdef0123456789abcdef01234567", "weights_sha256": None,
              "random": False},
    "dtype": "float32", "device": "cpu", "codebooks": 8, "formats": [TEXT_FIRST, AUDIO_FIRST], "text_rule": TEXT_RULE_VERSION,
    "params": {},
}
TEXT_MADE_BY = {"format_version": FORMAT_VERSION, "codec": None, "dtype": None, "device": None, "codebooks": None,
                "formats": [TEXT_ONLY], "text_rule": TEXT_RULE_VERSION, "params": {}}


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def make_output_dir(out: Path, components=SODA_LIKE, seed: int = 0, rejects_per_shard: int = 1,
                    record_files: bool = False) -> dict:
    """Write finished shards for ``components`` under ``out``; return the expected counts per component.

    ``record_files``: each record names the sizes of the files beside it, as the shard writer's records do (what
    makes a shard finished on an object store, SPEC §6); without it the records are those of an output made before
    that (finished on a local disk only), which tests that edit shards in place rely on."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    expected: dict[str, dict] = {}
    for spec in components:
        exp = expected.setdefault(
            spec.name,
            {"shards": 0, "documents": 0, "rows": 0, "utterances": 0, "audio_seconds": 0.0, "audio_tokens": 0,
             "rejects": {}, "utterance_seconds": [], "document_seconds": []},
        )
        for s in range(spec.shards):
            stem = f"shard-{s:05d}"
            paths = ShardPaths(Path(out), spec.name, stem)
            split = f"{spec.name.split('/')[0]}-{stem}"
            rows, n_docs, n_utts, secs, toks = [], 0, 0, 0.0, 0
            for d in range(spec.docs_per_shard):
                doc_id = f"{spec.name.replace('/', '_')}_{s:03d}_{d:04d}"
                if spec.text_only:
                    text = " ".join(_sentence(rng, rng.randint(5, 30)) for _ in range(rng.randint(1, 5)))
                    rows.append(
                        dict(id=doc_id, split=split, text=format_text_row(text), corpus=spec.name, format=TEXT_ONLY,
                             n_utterances=0, audio_seconds=0.0, n_audio_tokens=0,
                             metadata=json.dumps({"url": f"https://example.org/{doc_id}"}))
                    )
                    n_docs += 1
                    continue
                utts = []
                for u in range(rng.randint(*spec.utterances)):
                    seconds = round(rng.uniform(*spec.seconds), 2)
                    frames = int(np.ceil(seconds * 24000 / 1920))
                    codes = nrng.integers(0, 2048, size=(8, frames))
                    utts.append(
                        EncodedUtterance(
                            id=f"{doc_id}_W{u:06d}", doc_id=doc_id, order=(u,), text=_sentence(rng, rng.randint(3, 12)),
                            audio=codes_to_chars(codes), seconds=seconds,
                        )
                    )
                    exp["utterance_seconds"].append(seconds)
                doc_seconds = sum(u.seconds for u in utts)
                doc_tokens = sum(len(u.audio) for u in utts)
                exp["document_seconds"].append(doc_seconds)
                for fmt in (TEXT_FIRST, AUDIO_FIRST):
                    suffix = "_type1" if fmt == TEXT_FIRST else "_type2"
                    rows.append(
                        dict(id=doc_id + suffix, split=split, text=format_speech_row(utts, fmt), corpus=spec.name,
                             format=fmt, n_utterances=len(utts), audio_seconds=doc_seconds,
                             n_audio_tokens=doc_tokens, metadata=None)
                    )
                n_docs += 1
                n_utts += len(utts)
                secs += doc_seconds
                toks += 2 * doc_tokens
            with ShardWriter(paths.parquet) as w:
                w.write_all(rows)
                w.commit()
            rejects = [
                dict(id=f"{spec.name}-{stem}-bad{i}", reason="undecodable_audio" if i % 2 == 0 else "missing_json",
                     detail="synthetic reject", source=stem)
                for i in range(rejects_per_shard)
            ]
            with ShardWriter(paths.rejects, schema=REJECT_SCHEMA) as w:
                w.write_all(rejects)
                w.commit()
            by_reason: dict[str, int] = {}
            for r in rejects:
                by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
            read_items = (n_docs if spec.text_only else n_utts) + len(rejects)
            record = {
                "record_version": RECORD_VERSION, "component": spec.name, "shard": stem, "split": split,
                "unit": "record" if spec.text_only else "utterance",
                "source": {"inputs": [{"url": f"/synthetic/{spec.name}/{stem}", "size": 0}], "revision": None},
                "rows": len(rows), "documents": n_docs,
                "read": read_items, "written": read_items - len(rejects), "rejected": len(rejects), "rejects": by_reason,
                "audio_seconds": secs, "audio_tokens": toks, "text_chars": sum(len(r["text"]) for r in rows),
                "codec": None if spec.text_only else {"codec": "synthetic"}, "sodadata_version": "test",
                "made_by": json.loads(json.dumps(TEXT_MADE_BY if spec.text_only else SPEECH_MADE_BY)),
                "elapsed_seconds": 0.0, "timings": {}, "finished_at": "2026-01-01T00:00:00Z",
            }
            if record_files:
                record["files"] = {name: (paths.dir / name).stat().st_size for name in shard_file_names(stem)}
            write_json_atomic(paths.record, record)
            exp["shards"] += 1
            exp["documents"] += n_docs
            exp["rows"] += len(rows)
            exp["utterances"] += n_utts
            exp["audio_seconds"] += secs
            exp["audio_tokens"] += toks
            for k, v in by_reason.items():
                exp["rejects"][k] = exp["rejects"].get(k, 0) + v
    return expected
