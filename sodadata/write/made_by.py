"""What made a shard: the ``made_by`` of every shard record (SPEC §2), and how two of them differ.

``made_by`` is everything that changes a shard's rows besides its source: the codec (Hub id and commit, or the
content hash of a local model, or a seeded random model), dtype, device kind, codebooks, row formats, the text
rule's version, the recipe parameters that change rows, and the format version. It is computed once per run on
the driver (:func:`prepare`) and written unchanged into every shard's record, so all shards of a run carry the
identical dict. Shards whose ``made_by`` differ are never mixed silently: a run refuses to add to them
(:class:`MadeByMismatch`) unless told to rebuild them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import TYPE_CHECKING

from sodadata.encode.codec import codec_identity
from sodadata.write.document import TEXT_ONLY, TEXT_RULE_VERSION

if TYPE_CHECKING:
    from sodadata.read.recipe import Recipe
    from sodadata.run.pipeline import PipelineConfig

FORMAT_VERSION = 2
# What tools say of a record without ``made_by`` (written before this field existed).
BEFORE_FORMAT_2 = "made before format 2"
_ABSENT = object()


def build(recipe: Recipe, config: PipelineConfig, codec: dict | None) -> dict:
    """The ``made_by`` of a run of ``recipe`` under ``config``; ``codec`` is :func:`codec_identity`'s answer."""
    if recipe.kind == "speech":
        if config.codec is None or codec is None:
            raise ValueError(f"recipe {recipe.name} needs a codec")
        device = config.codec.device.split(":")[0]  # the kind: cuda:3 and cuda make the same codes
        dtype, codebooks, formats = config.codec.dtype, config.codec.num_codebooks, list(config.formats)
        params = {"max_utterance_seconds": float(config.max_utterance_seconds), **recipe.row_params()}
    else:
        codec = device = dtype = codebooks = None
        formats, params = [TEXT_ONLY], recipe.row_params()
    return {
        "format_version": FORMAT_VERSION,
        "codec": codec,
        "dtype": dtype,
        "device": device,
        "codebooks": codebooks,
        "formats": formats,
        "text_rule": TEXT_RULE_VERSION,
        "params": dict(sorted(params.items())),
    }


def prepare(recipe: Recipe, config: PipelineConfig) -> PipelineConfig:
    """``config`` with ``made_by`` set and a Hub codec pinned to the commit it names now.

    Run once on the driver before any task: resolving a Hub revision asks the Hub, and hashing a local model reads
    its weights; every task then loads the same commit and records the same dict.
    """
    if config.made_by is not None:
        return config
    codec_config = config.codec if recipe.kind == "speech" else None
    codec = codec_identity(codec_config) if codec_config is not None else None
    if codec is not None and codec["revision"] is not None:
        codec_config = dataclasses.replace(codec_config, revision=codec["revision"])
        config = dataclasses.replace(config, codec=codec_config)
    return dataclasses.replace(config, made_by=build(recipe, config, codec))


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(recorded: dict | None, expected: dict) -> list[tuple[str, object, object]]:
    """(dotted key, recorded value, expected value) for every key whose values differ, in ``expected``'s order.

    ``recorded`` None (a record without ``made_by``) differs in every key. Nested dicts are compared key by key
    (``codec.id``); a key present on one side only is reported with the other side absent.
    """
    a, b = _flatten(recorded or {}), _flatten(expected)
    keys = [*b, *(k for k in a if k not in b)]
    return [(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in keys if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def _show(value: object) -> str:
    if value is _ABSENT:
        return "(absent)"
    if isinstance(value, str):
        # a commit or a weights hash: its first 12 hex digits tell two apart in a message
        return value[:12] + "…" if re.fullmatch(r"[0-9a-f]{40,64}", value) else value
    return json.dumps(value)


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def difference_lines(a: dict, b: dict) -> list[str]:
    """The keys where two ``made_by`` differ, one ``key: A != B`` each (``codec.id: tiny-random != kyutai/mimi``),
    in ``b``'s key order; empty when they are equal. What tools print for a component whose shards differ."""
    return [f"{k}: {_show(x)} != {_show(y)}" for k, x, y in differences(a, b)]


def describe(recorded: dict | None, expected: dict) -> str:
    """How shards made by ``recorded`` differ from ``expected``, naming the keys:
    ``made with codec.id tiny-random and codec.random true, this run uses codec.id kyutai/mimi and ...``."""
    if recorded is None:
        return f"{BEFORE_FORMAT_2} (no made_by in the record)"
    diff = differences(recorded, expected)
    if not diff:
        return "made the same way"
    was = _and([f"{k} {_show(old)}" for k, old, _ in diff])
    now = _and([f"{k} {_show(new)}" for k, _, new in diff])
    return f"made with {was}, this run uses {now}"


class MadeByMismatch(RuntimeError):
    """Finished shards this run would touch were made otherwise; raised before any work starts."""


def mismatch_line(mismatched: dict[str, list[dict | None]], expected: dict) -> str:
    """One line for :class:`MadeByMismatch`: per component and kind of difference, how many finished shards, what
    differs, and the two ways on. ``mismatched``: component -> the ``made_by`` of each mismatched shard (None when
    its record has none)."""
    groups: dict[str, dict[str, int]] = {}  # how they differ -> component -> shards
    for component, made in sorted(mismatched.items()):
        for m in made:
            per_component = groups.setdefault(describe(m, expected), {})
            per_component[component] = per_component.get(component, 0) + 1
    parts = []
    for what, per_component in list(groups.items())[:4]:
        n = sum(per_component.values())
        parts.append(f"{', '.join(per_component)}: {n} finished shard{'s were' if n > 1 else ' was'} {what}")
    if len(groups) > 4:
        parts.append(f"and {len(groups) - 4} more kinds of difference")
    total = sum(sum(g.values()) for g in groups.values())
    return (
        "; ".join(parts) + f". Nothing was done. Write to another --out, or add --redo-mismatched to rebuild "
        f"{'these' if total > 1 else 'this'} {total} shard{'s' if total > 1 else ''} (each replaced atomically)."
    )
