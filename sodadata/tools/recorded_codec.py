"""The codec to decode a shard's rows with: the one its record names (``made_by``), unless ``--codec`` says otherwise.

Shared by ``sodadata decode`` and ``sodadata inspect``: their codec options (:func:`add_codec_args`), the codebooks
a shard's rows hold (:func:`codebooks_of`) and the checked choice of codec (:func:`codec_config_from`).
"""

from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path
from typing import Any

from sodadata.encode.codec import RANDOM_CODECS, CodecConfig
from sodadata.encode.codes import NUM_CODEBOOKS
from sodadata.write.outputs import NO_MADE_BY

log = logging.getLogger(__name__)


def add_codec_args(p: argparse.ArgumentParser) -> None:
    """Codec options shared by ``decode`` and ``inspect``."""
    p.add_argument("--codec", default=None,
                   help="Mimi to decode with: Hub id, local dir, or tiny-random/full-random (RANDOM: noise, not "
                        "speech). Default: the codec the shard's record names (made_by: id and revision); a shard "
                        "made with a local folder needs --codec DIR, whose weights must hash as recorded")
    p.add_argument("--revision", default=None, help="Hub revision of --codec (default: the recorded one)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32", choices=("float32", "tf32", "bfloat16", "float16"))


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    # inspect resolves the codec once per sampled row: say each thing once
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("%s", message)


@functools.lru_cache(maxsize=8)
def _local_weights_sha256(directory: str) -> str:
    from sodadata.encode.codec import weights_sha256

    return weights_sha256(directory)


def codebooks_of(record: dict | None) -> int:
    """The codebooks per frame of a shard's rows, as its record states them (``made_by.codebooks``; a record made
    before format 2: its codec settings), 8 when it says nothing."""
    record = record or {}
    made_by = record.get("made_by")
    if isinstance(made_by, dict):
        return int(made_by.get("codebooks") or NUM_CODEBOOKS)
    legacy = record.get("codec") if isinstance(record.get("codec"), dict) else {}
    return int(legacy.get("num_codebooks", NUM_CODEBOOKS))


def codec_config_from(args: Any, record: dict | None) -> CodecConfig:
    """The codec to decode a shard's rows with: the one its record's ``made_by`` names (id and revision), unless
    ``--codec`` says otherwise (a warning when it names another model).

    A shard made with a local ``save_pretrained`` directory (``codec.id == "local"``) needs ``--codec DIR``, and
    that directory's weights must hash to the recorded ``weights_sha256`` (``ValueError`` otherwise: another model
    decodes codes into noise). A record without ``made_by`` (made before format 2) falls back to its ``codec``
    settings. ``args``: anything with ``codec``, ``revision``, ``device`` and ``dtype`` (parsed options,
    InspectOptions).
    """
    record = record or {}
    made_by = record.get("made_by")
    name, revision = args.codec, args.revision
    if isinstance(made_by, dict):
        codec = made_by.get("codec")
        if not isinstance(codec, dict):
            raise ValueError("this shard holds text only (its made_by names no codec): there is no audio to decode")
        rec_name, rec_rev = codec.get("id"), codec.get("revision")
        if rec_name == "local":
            want = codec.get("weights_sha256")
            if name is None:
                raise ValueError(f"this shard was encoded with a local codec (weights sha256 {want}): pass --codec "
                                 "DIR, the MimiModel.save_pretrained folder holding those weights")
            if name in RANDOM_CODECS or not Path(name).is_dir():
                raise ValueError(f"this shard was encoded with a local codec (weights sha256 {want}); --codec {name} "
                                 "is not a folder: pass the save_pretrained folder holding those weights")
            got = _local_weights_sha256(str(Path(name).resolve()))
            if got != want:
                raise ValueError(f"--codec {name}: its weights hash to sha256 {got}, but this shard was encoded with "
                                 f"weights {want}: pass the folder that encoded it")
        elif name is None:
            name, revision = rec_name, revision or rec_rev
            log.info("decoding with %s%s, the codec recorded for this shard", name, f"@{revision}" if revision else "")
        elif name != rec_name:
            _warn_once(f"the shard was encoded with {rec_name!r} but you decode with {name!r}: expect noise unless "
                       "they are the same model")
    else:
        # made before format 2: the record's codec settings are all there is
        legacy = record.get("codec") if isinstance(record.get("codec"), dict) else {}
        rec_name, rec_rev = legacy.get("codec"), legacy.get("revision")
        if name is None:
            known = isinstance(rec_name, str) and (rec_name in RANDOM_CODECS or "/" in rec_name
                                                   or Path(rec_name).is_dir())
            if not known:
                raise ValueError("the shard's record names no codec (made before format 2, "
                                 f"codec {rec_name!r}): pass --codec")
            name, revision = rec_name, revision or rec_rev
            _warn_once(f"the shard's record has no made_by ({NO_MADE_BY}): decoding with {name}, the codec its "
                       "settings name")
        elif rec_name and rec_name != name:
            _warn_once(f"the shard was encoded with {rec_name!r} but you decode with {name!r}: expect noise unless "
                       "they are the same model")
    num_codebooks = codebooks_of(record)
    if num_codebooks < NUM_CODEBOOKS:
        # Mimi decodes from any prefix of its codebooks; the finer ones are simply absent (quieter, muffled audio)
        _warn_once(f"this shard keeps {num_codebooks} of Mimi's {NUM_CODEBOOKS} codebooks (made_by.codebooks): "
                   f"decoded from those alone, lossy")
    return CodecConfig(codec=name, revision=revision, device=args.device, dtype=args.dtype,
                       num_codebooks=num_codebooks)
