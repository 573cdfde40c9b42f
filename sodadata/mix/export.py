"""``sodadata export levanter RECIPE.yaml``: the same mixture as a Levanter / Marin ``train_lm`` config.

Writes the data section of Levanter's ``train_lm`` config for the recipe, plus the model's window length, in
either of the two schemas Levanter has had (both checked against Levanter's own config classes, through
draccus, by ``tests/test_levanter.py``):

- ``--levanter current`` (default; Levanter as developed in the Marin repository, ``marin-levanter`` on PyPI):
  ``data.components: {name: {source: {type: url, train_urls | validation_urls}, format}}`` and the window length
  as ``model.max_seq_len`` and ``train_seq_len``.
- ``--levanter 1.2`` (the last standalone ``levanter`` release): ``data.configs: {name: {train_urls |
  validation_urls, format}}`` and ``model.seq_len``.

Each recipe component is one source of Parquet shards (``format: {type: text, text_key: text}``: Levanter's URL
source reads Parquet and takes the ``text`` column) weighted by its token share; each of the recipe's
``validation`` sets is a validation-only source with weight 0, so Levanter reports its loss and never trains on it.

One BOS per row. Every row already starts with ``<|begin_of_text|>`` and ends with ``<|end_of_text|>`` (SPEC §2),
and Levanter's cache builder always asks for a BOS in front of each document: current Levanter inserts the
tokenizer's declared BOS id, 1.2 relies on the tokenizer's post-processor (or prepends ``"<|begin_of_text|> "``
when it has none). No config switch turns this off (``enforce_bos=True`` is fixed in both versions' cache
builders). The export therefore names a **rows-only tokenizer**: the recipe's tokenizer, every id unchanged,
with no post-processor and no declared BOS token (``--tokenizer-out DIR`` writes it). Levanter then adds nothing
and each row trains as ``128000 … 128001``, exactly as sodadata's own stream packs it. ``enforce_eos: false`` for
the same reason at the end (left on, Levanter appends ``" " + eos``).

``--names soda`` renames the components to SODA's Marin names (``yodas2/en``, ``Emilia-YODAS/EN``, ``Emilia/EN``,
``nemotron_cc/hq_actual``) and uses SODA's mixture blocks of 2048 windows, so Levanter's cache paths and
per-component metrics line up with SODA's runs.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import yaml

from sodadata.cli import OneLineParser, setup_logging
from sodadata.locations import as_location, check_location, display, is_remote, local_path
from sodadata.mix.mixture import MixtureConfig, SourceConfig
from sodadata.mix.tokenizer import PUBLISHED, local_tokenizer_file

log = logging.getLogger(__name__)

TARGETS = ("levanter",)
LEVANTER_SCHEMAS = ("current", "1.2")
NAMINGS = ("recipe", "soda")
# SODA's Marin config (experiments/audio/exp1699_marin_audio_all.py): its component names; it mixed in Levanter's
# default blocks of 2048 windows.
SODA_NAMES = {
    "yodas2/en": "yodas2/en",
    "emilia-yodas/en": "Emilia-YODAS/EN",
    "emilia/en": "Emilia/EN",
    "nemotron-cc/hq-actual": "nemotron_cc/hq_actual",
}
SODA_MIXTURE_BLOCK_SIZE = 2048
MODEL_TYPE = "qwen3"  # SODA's architecture (Levanter's Qwen3Config); the export only sets its window length


def _absolute(location: str) -> str:
    """URLs as they are; local paths absolute (a Levanter job does not run in this working directory)."""
    return location if "://" in location else str(Path(location).resolve())


def train_urls(mixture: MixtureConfig, component: SourceConfig, list_shards: bool) -> list[str]:
    """The component's shards for Levanter: a glob, or with ``list_shards`` every finished shard by name.

    A directory becomes ``<dir>/*.parquet``: that skips ``rejects/`` (one level down). It also takes a shard
    whose record is missing (a task that failed after writing); ``list_shards`` gives exactly the finished
    shards the mixture stream reads.
    """
    from sodadata.mix.streaming import is_glob
    from sodadata.mix.streaming import list_shards as _list

    location = mixture.component_location(component)
    if list_shards:
        return [_absolute(u) for u in _list(location).urls()]
    location = _absolute(location)
    if is_glob(location):
        return [location]
    return [location.rstrip("/") + "/*.parquet"]


def check_sources(mixture: MixtureConfig) -> None:
    """Before ``--list-shards`` reads them: every component and validation set on an object store can be read (backend installed,
    credentials accepted, something there; one :class:`~sodadata.read.recipe.ConfigError` line otherwise), so a config
    naming a bucket nobody can read is never written."""
    from sodadata.mix.streaming import check_readable

    for s in (*mixture.components, *mixture.validation):
        check_readable(mixture.component_location(s))


def levanter_names(mixture: MixtureConfig, naming: str) -> dict[str, str]:
    """Recipe name -> Levanter name for every component and validation set."""
    names = {s.name: s.name for s in (*mixture.components, *mixture.validation)}
    if naming == "recipe":
        return names
    unknown = [c.name for c in mixture.components if c.name not in SODA_NAMES]
    if unknown:
        raise ValueError(f"--names soda knows SODA's components {sorted(SODA_NAMES)}; this recipe also has {unknown}")
    names.update({c.name: SODA_NAMES[c.name] for c in mixture.components})
    clash = sorted({n for n in names.values() if list(names.values()).count(n) > 1})
    if clash:
        raise ValueError(f"with --names soda, validation sets clash with SODA's component names: {clash}")
    return names


def levanter_config(mixture: MixtureConfig, tokenizer: str, cache_dir: str, schema: str = "current",
                    naming: str = "recipe", list_shards: bool = False) -> dict:
    """A partial Levanter ``train_lm`` config: ``data`` for the recipe and the model's window length.

    ``tokenizer`` is what Levanter loads: a rows-only tokenizer (:func:`sodadata.mix.tokenizer.rows_only_tokenizer`),
    or every row gets a second BOS.
    """
    if schema not in LEVANTER_SCHEMAS:
        raise ValueError(f"unknown Levanter schema {schema!r}; one of {LEVANTER_SCHEMAS}")
    names = levanter_names(mixture, naming)
    fmt = {"type": "text", "text_key": mixture.text_key}
    sources = {}
    for split, entries in (("train_urls", mixture.components), ("validation_urls", mixture.validation)):
        for s in entries:
            sources[names[s.name]] = {split: train_urls(mixture, s, list_shards)}
    if schema == "current":
        # The format belongs to the component: a `format` inside `source` is ignored by current Levanter.
        datasets_key = "components"
        datasets = {name: {"source": {"type": "url", **urls}, "format": dict(fmt)} for name, urls in sources.items()}
        model = {"type": MODEL_TYPE, "max_seq_len": mixture.seq_len}
    else:
        datasets_key = "configs"
        datasets = {name: {**urls, "format": dict(fmt)} for name, urls in sources.items()}
        model = {"type": MODEL_TYPE, "seq_len": mixture.seq_len}
    weights = {names[c.name]: c.weight for c in mixture.components}
    weights.update({names[v.name]: 0.0 for v in mixture.validation})  # validation only: never drawn for training
    data = {
        "tokenizer": tokenizer,
        "cache_dir": cache_dir,
        "enforce_eos": False,  # rows end with <|end_of_text|> already
        "shuffle": True,
        "permutation_type": "feistel",  # SODA's setting (Marin's lm_mixture_data_config)
        "stop_strategy": "restart",  # a component that runs out starts over, like the stream's epochs
        "mixture_block_size": SODA_MIXTURE_BLOCK_SIZE if naming == "soda" else mixture.block_size,
        datasets_key: datasets,
        "train_weights": weights,
    }
    config = {"data": data, "model": model}
    if schema == "current":
        config["train_seq_len"] = mixture.seq_len
    return config


def check_rows_only(tokenizer: str) -> None:
    """Refuse a local tokenizer that would make Levanter add a BOS in front of the rows' own."""
    if tokenizer == PUBLISHED:
        raise ValueError(f"--tokenizer {tokenizer} declares a BOS token: Levanter would put a second BOS in front of "
                         "every row; write a rows-only one with --tokenizer-out DIR")
    file = None if "://" in tokenizer else local_tokenizer_file(tokenizer)  # raises for a path that is not there
    if file is None:
        log.warning("tokenizer %s is not local and is taken as it is: it must be one that "
                    "`sodadata export levanter --tokenizer-out` wrote, or each row trains with two BOS", tokenizer)
        return
    if file.parent != Path(tokenizer):
        raise ValueError(f"--tokenizer {tokenizer}: Levanter loads a tokenizer directory, not a file")
    config_file = file.parent / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if config.get("bos_token") is not None or json.loads(file.read_text()).get("post_processor") is not None:
        raise ValueError(f"--tokenizer {tokenizer} declares a BOS token or adds one when encoding: Levanter would "
                         "put a second BOS in front of every row; write a rows-only one with --tokenizer-out DIR")


def write_rows_only_tokenizer(source: str, out: Path) -> None:
    """``source`` (the recipe's tokenizer, or one built the same way) as a rows-only tokenizer in ``out``."""
    from sodadata.mix.tokenizer import load_tokenizer, rows_only_tokenizer, save_tokenizer

    save_tokenizer(rows_only_tokenizer(load_tokenizer(source)), out, base=source, bos_token=False)
    log.info("wrote the rows-only tokenizer for Levanter to %s (from %s)", out, source)


def render(mixture: MixtureConfig, config: dict, source: str, schema: str) -> str:
    length_fields = "model.max_seq_len and train_seq_len" if schema == "current" else "model.seq_len"
    release = "current Levanter (marin-levanter)" if schema == "current" else "Levanter 1.2"
    header = [
        f"# Levanter train_lm config for {source}, {release} schema, written by `sodadata export levanter`.",
        "# Merge into your levanter.main.train_lm config: `data` as it is; in `model`, keep "
        f"{length_fields} = {mixture.seq_len}",
        f"# (the recipe's seq_len) and set your model's sizes ({MODEL_TYPE} is SODA's architecture).",
        "# train_weights are token shares (Levanter normalizes them); every window holds seq_len tokens, so mixing",
        "# windows by these weights gives these token shares, as sodadata's own stream does. Weight 0: validation only.",
        "# The tokenizer is rows-only (no BOS of its own) and enforce_eos is false: each row already starts with",
        "# <|begin_of_text|> and ends with <|end_of_text|>, and trains with exactly one of each.",
    ]
    body = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=1000)
    return "\n".join(header) + "\n" + body


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="sodadata export", description=__doc__.split("\n\n")[0])
    p.add_argument("target", choices=TARGETS, help="the trainer to export for")
    p.add_argument("recipe", help="mixture recipe YAML (e.g. recipes/soda.yaml)")
    p.add_argument("--data", help="root of relative component paths (overrides the recipe's root)")
    p.add_argument("--levanter", choices=LEVANTER_SCHEMAS, default="current",
                   help="config schema: current Levanter (marin-levanter, default) or the 1.2 release")
    p.add_argument("--names", choices=NAMINGS, default="recipe",
                   help="component names: the recipe's, or SODA's Marin names with its mixture blocks of 2048")
    tok = p.add_mutually_exclusive_group(required=True)
    tok.add_argument("--tokenizer-out", type=local_path, metavar="DIR",
                     help="write the rows-only tokenizer (the recipe's, adding no BOS) here and use it")
    tok.add_argument("--tokenizer", metavar="DIR_OR_URL",
                     help="use a rows-only tokenizer written before by --tokenizer-out (e.g. copied to gs://)")
    p.add_argument("--base-tokenizer", metavar="NAME",
                   help="with --tokenizer-out: make it from this tokenizer (e.g. a local `sodadata tokenizer build` "
                        "output) instead of the recipe's; the ids must be the same")
    p.add_argument("--cache-dir", default="cache/sodadata",
                   help="where Levanter writes its token caches (default: cache/sodadata; use a gs:// path on TPU)")
    p.add_argument("--list-shards", action="store_true",
                   help="list every finished shard instead of a glob per component (reads the directories)")
    p.add_argument("--out", help="write the YAML here (a local path or a URL, e.g. beside the shards in gs://) "
                   "instead of printing it")
    a = p.parse_args(argv)
    if a.base_tokenizer and a.tokenizer_out is None:
        p.error("--base-tokenizer goes with --tokenizer-out")

    setup_logging()
    try:
        mixture = MixtureConfig.load(a.recipe, root=a.data)
        if a.list_shards:  # the one option that reads the shards here (a glob is read by the Levanter job)
            check_sources(mixture)
        if a.out is not None and is_remote(a.out):
            check_location(a.out.rsplit("/", 1)[0], write=True)
        if a.tokenizer_out is not None:
            tokenizer = str(a.tokenizer_out.resolve())
        else:
            check_rows_only(a.tokenizer)
            tokenizer = str(Path(a.tokenizer).resolve()) if Path(a.tokenizer).is_dir() else a.tokenizer
        config = levanter_config(mixture, tokenizer, a.cache_dir, a.levanter, a.names, a.list_shards)
        text = render(mixture, config, a.recipe, a.levanter)
        if a.tokenizer_out is not None:  # last: a recipe or shard error leaves nothing half-written
            write_rows_only_tokenizer(a.base_tokenizer or mixture.tokenizer, a.tokenizer_out)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"sodadata export: {exc}", file=sys.stderr)
        return 2
    if a.out:
        as_location(a.out).write_text(text, encoding="utf-8")
        log.info("wrote %s", display(a.out))
    else:
        sys.stdout.write(text)
    return 0
