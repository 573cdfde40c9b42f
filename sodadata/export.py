"""``sodadata export levanter RECIPE.yaml``: the same mixture as a Levanter / Marin data config.

Prints (or writes with ``--out``) a ``data:`` block for Levanter's ``train_lm`` (``LMMixtureDatasetConfig``): one
entry under ``configs`` per recipe component with its Parquet shards as ``train_urls`` and ``format: {type: text,
text_key: text}``, the token weights as ``train_weights``, and the recipe's tokenizer. The shards are read as
they are: Levanter's URL source reads Parquet and takes the ``text`` column.

What carries over and what does not (also written into the YAML as comments):

- Levanter packs each component's documents into ``seq_len`` windows and blocks attention across documents
  (``block_cross_document_attention``, default on), and mixes windows by ``train_weights`` in blocks: the same
  token shares as ``sodadata.packing``. The window order differs (another shuffle); the data and shares do not.
- ``enforce_eos: false``: every row already ends with ``<|end_of_text|>`` (SPEC §2). Left on, Levanter appends
  ``" " + eos`` to each row because a plain encode does not end with EOS.
- BOS: Levanter encodes with the tokenizer's special tokens, and the Llama-3-based tokenizer prepends
  ``<|begin_of_text|>`` to rows that already start with one. No data config option turns that off; the
  published SODA caches have the same doubled BOS. ``sodadata.packing`` encodes without it.
- The window length is the model's (``model.max_seq_len`` in current Levanter), not a data setting: set it to
  the recipe's ``seq_len``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from sodadata.mixture import ComponentConfig, MixtureConfig
from sodadata.tokenizer import local_tokenizer_file

log = logging.getLogger(__name__)

TARGETS = ("levanter",)
_GLOB_CHARS = "*?["


def _absolute(location: str) -> str:
    """URLs as they are; local paths absolute (a Levanter job does not run in this working directory)."""
    return location if "://" in location else str(Path(location).resolve())


def train_urls(mixture: MixtureConfig, component: ComponentConfig, list_shards: bool) -> list[str]:
    """The component's shards for Levanter: a glob, or with ``list_shards`` every finished shard by name.

    A directory becomes ``<dir>/*.parquet``: that skips ``rejects/`` (one level down). It also takes a shard
    whose record is missing (a task that failed after writing); ``list_shards`` gives exactly the finished
    shards the mixture stream reads.
    """
    location = mixture.component_location(component)
    if list_shards:
        from sodadata.streaming import list_shards as _list

        return [_absolute(u) for u in _list(location).urls()]
    location = _absolute(location)
    if any(ch in location for ch in _GLOB_CHARS):
        return [location]
    return [location.rstrip("/") + "/*.parquet"]


def levanter_config(mixture: MixtureConfig, cache_dir: str, list_shards: bool = False) -> dict:
    """The ``data:`` section of a Levanter ``train_lm`` config (``LMMixtureDatasetConfig``) for ``mixture``."""
    tokenizer = mixture.tokenizer
    if local_tokenizer_file(tokenizer) is not None:  # a local build: absolute, so the Levanter job finds it
        tokenizer = str(Path(tokenizer).resolve())
    configs = {
        c.name: {
            "train_urls": train_urls(mixture, c, list_shards),
            "format": {"type": "text", "text_key": mixture.text_key},
        }
        for c in mixture.components
    }
    return {
        "tokenizer": tokenizer,
        "cache_dir": cache_dir,
        "enforce_eos": False,
        "shuffle": True,
        "permutation_type": "feistel",  # SODA's setting (Marin's lm_mixture_data_config)
        "stop_strategy": "restart",  # a component that runs out starts over, like the stream's epochs
        "configs": configs,
        "train_weights": {c.name: c.weight for c in mixture.components},
    }


def render(mixture: MixtureConfig, data: dict, source: str) -> str:
    header = [
        f"# Levanter / Marin mixture data config for {source}, written by `sodadata export levanter`.",
        "# Paste as the `data:` section of a levanter.main.train_lm config (LMMixtureDatasetConfig).",
        f"# Windows: set the model's max_seq_len to {mixture.seq_len} (the recipe's seq_len).",
        "# train_weights are token shares (Levanter normalizes them); every window holds seq_len tokens, so mixing",
        "# windows by these weights gives these token shares, as sodadata's own stream does.",
        "# enforce_eos is false because each row already ends with <|end_of_text|>. Levanter encodes with the",
        "# tokenizer's special tokens: with a BOS-prepending (Llama-3) tokenizer each row starts with two BOS.",
    ]
    body = yaml.safe_dump({"data": data}, sort_keys=False, allow_unicode=True, width=1000)
    return "\n".join(header) + "\n" + body


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sodadata export", description=__doc__.split("\n\n")[0])
    p.add_argument("target", choices=TARGETS, help="the trainer to export for")
    p.add_argument("recipe", help="mixture recipe YAML (e.g. recipes/soda.yaml)")
    p.add_argument("--data", help="root of relative component paths (overrides the recipe's root)")
    p.add_argument("--cache-dir", default="cache/sodadata",
                   help="where Levanter writes its token caches (default: cache/sodadata; use a gs:// path on TPU)")
    p.add_argument("--list-shards", action="store_true",
                   help="list every finished shard instead of a glob per component (reads the directories)")
    p.add_argument("--out", type=Path, help="write the YAML here instead of printing it")
    a = p.parse_args(argv)
    try:
        mixture = MixtureConfig.load(a.recipe, root=a.data)
        text = render(mixture, levanter_config(mixture, a.cache_dir, a.list_shards), a.recipe)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"sodadata export: {exc}", file=sys.stderr)
        return 1
    if a.out:
        a.out.write_text(text, encoding="utf-8")
        log.info("wrote %s", a.out)
    else:
        sys.stdout.write(text)
    return 0
