"""Run by tests/test_levanter.py with a Levanter virtual environment's Python (never sodadata's): what Levanter
itself makes of an export.

1. Parses the export as a whole ``levanter.main.train_lm.TrainLmConfig`` through draccus, as ``train_lm`` does.
2. Builds the token caches of every component, train and validation split, with ``LmDataConfig.build_caches``
   (1.2: ``LMMixtureDatasetConfig.build_caches``), the code ``train_lm`` runs before training, and reads back
   every row's ``input_ids``.
3. Control: tokenizes the first training row with the same preprocessor the cache builder makes
   (``preprocessor_for_format(..., enforce_bos=True, ...)``) but with ``--control-tokenizer``, to show what a
   tokenizer that declares a BOS does to SODA rows.

Writes one JSON object per export to ``--out`` (one path per export: several exports share one process, so
Levanter's imports are paid once). Imports only Levanter and the standard library.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import draccus
from levanter.main.train_lm import TrainLmConfig


def _rows(cache) -> list[list[int]]:
    if hasattr(cache, "await_finished"):  # 1.2 builds in the background
        cache.await_finished()
    ds = cache.as_sync_dataset()
    return [[int(t) for t in row["input_ids"]] for row in ds.get_batch(list(range(len(ds))))]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("config", nargs="+")
    p.add_argument("--control-tokenizer", required=True)
    p.add_argument("--out", nargs="+", required=True, help="one report per config, in the same order")
    a = p.parse_args()
    if len(a.out) != len(a.config):
        p.error(f"{len(a.config)} configs but {len(a.out)} --out paths")
    for config, out in zip(a.config, a.out):
        probe(config, a.control_tokenizer, out)


def probe(config: str, control_tokenizer: str, out: str) -> None:
    cfg = draccus.parse(TrainLmConfig, config_path=config, args=[])
    data = cfg.data
    current = hasattr(data, "components")  # 1.2 names them `configs`
    entries = data.components if current else data.configs
    report: dict = {
        "config_class": type(data).__name__,
        "model_class": type(cfg.model).__name__,
        "seq_len": cfg.model.max_seq_len if current else cfg.model.seq_len,
        "train_seq_len": cfg.train_seq_len if current else None,
        "tokenizer": data.tokenizer,
        "enforce_eos": data.enforce_eos,
        "mixture_block_size": data.mixture_block_size,
        "train_weights": data.train_weights,
        "components": {},
        "rows": {},
    }
    for name, entry in entries.items():
        source = entry.source if current else entry
        report["components"][name] = {
            "class": type(entry).__name__,
            "source_class": type(source).__name__,
            "train_urls": list(source.train_urls),
            "validation_urls": list(source.validation_urls),
            "format_class": type(entry.format).__name__,
            "text_key": entry.format.text_key,
        }
    # Both splits' builds are started before any is read: 1.2 builds in the background (Ray), and its validation
    # cache, started after the train caches were read, cost another 13 s of this test.
    started = {split: data.build_caches(split) for split in ("train", "validation")}
    for split, caches in started.items():
        report["rows"][split] = {name: _rows(cache) for name, cache in caches.items()}

    try:
        from levanter.data.text.formats import preprocessor_for_format  # current
    except ImportError:
        from levanter.data.text import preprocessor_for_format  # 1.2: one module

    name, entry = next((n, e) for n, e in entries.items() if data.train_weights.get(n, 0) > 0)
    source = (entry.source if current else entry).get_shard_source("train")
    first = next(iter(source.open_shard(source.shard_names[0])))
    control = dataclasses.replace(data, tokenizer=control_tokenizer)
    processor = preprocessor_for_format(entry.format, control.the_tokenizer, enforce_bos=True,
                                        enforce_eos=control.enforce_eos)
    (encoded,) = processor([first])
    report["control"] = {"component": name, "text": first[entry.format.text_key],
                         "input_ids": [int(t) for t in encoded["input_ids"]]}
    with open(out, "w", encoding="utf-8") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
