"""``sodadata decode OUT_DIR --id ROW_ID [--out file.wav]``: hear what a row holds.

Finds the row across an output directory (:mod:`sodadata.tools.row_lookup`: predicate pushdown on the ``id`` column, not
a full read), reads it (:func:`sodadata.write.document.parse_row`), decodes its utterances with the codec its shard's
record names (:mod:`sodadata.tools.recorded_codec`, :mod:`sodadata.tools.mimi_decoder`) and writes the audio
(:mod:`sodadata.tools.audio_files`).

``--codec tiny-random`` / ``full-random`` are seeded RANDOM models: decoding with them gives noise, not speech,
and their codes are NOT real Mimi codes. Decode with the codec that encoded the data: ``sodadata decode`` reads it
from the shard's record when ``--codec`` is not given.

The names of the modules it is made of stay importable from here (``sodadata.tools.decode.MimiDecoder``,
``audio_to_string``, ``find_rows`` ...), as they were when this module held them all.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from sodadata.cli import OneLineParser, setup_logging
from sodadata.encode.codec import NOT_REAL_WARNING
from sodadata.encode.codes import SAMPLE_RATE, chars_to_codes
from sodadata.locations import check_location, display, is_remote
from sodadata.read.recipe import ConfigError
from sodadata.tools.audio_files import (
    AUDIO_FORMATS,
    AUDIO_MIME,
    audio_suffix,
    can_write,
    compact_audio_format,
    write_audio,
)
from sodadata.tools.audio_strings import audio_to_str, audio_to_string, str_to_audio, string_to_audio
from sodadata.tools.mimi_decoder import MimiDecoder, get_decoder
from sodadata.tools.recorded_codec import add_codec_args, codebooks_of, codec_config_from
from sodadata.tools.row_lookup import FoundRow, find_row, find_rows, row_files
from sodadata.write.document import ParsedRow, Utterance, audio_spans, parse_row

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="sodadata decode",
        description="Decode one row of an output directory back to audio (its utterances joined in order).",
    )
    p.add_argument("out_dir", help="output root, a folder holding output roots, one component, or one shard (never "
                   "its _hub/ staged copies): a local path or a URL (s3://, gs://, az://)")
    p.add_argument("--id", required=True, dest="row_id", help="row id, e.g. EN_B00000_S00040_type1 (a document id "
                   "finds its _type1 row)")
    p.add_argument("--out", default=None, help="audio file to write here (.wav, .flac, .mp3, .ogg); "
                   "default <row id>.wav in the working directory, also when OUT_DIR is a bucket")
    p.add_argument("--utterance", type=int, default=None, help="only this utterance (0-based)")
    add_codec_args(p)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.out is not None and is_remote(args.out):
        print(f"sodadata decode: --out {display(args.out)}: the audio file is written on this machine: give a local "
              "path", file=sys.stderr)
        return 2
    try:
        check_location(args.out_dir, write=False)
    except ConfigError as exc:
        print(f"sodadata decode: {exc}", file=sys.stderr)
        return 2
    if not is_remote(args.out_dir) and not Path(args.out_dir).exists():
        print(f"sodadata decode: {args.out_dir} does not exist", file=sys.stderr)
        return 2
    try:
        found = find_row(args.out_dir, args.row_id)
    except LookupError as exc:  # KeyError (not there) too
        print(f"sodadata decode: {exc.args[0]}", file=sys.stderr)
        return 1
    row = found.row
    try:
        parsed = parse_row(row["text"], row.get("format"), codebooks_of(found.record))
    except ValueError as exc:
        print(f"sodadata decode: row {row['id']} in {display(found.path)} is malformed: {exc}", file=sys.stderr)
        return 1
    if not parsed.utterances:
        print(f"sodadata decode: row {row['id']} is a text row (format {parsed.format!r}): it holds no audio",
              file=sys.stderr)
        return 1
    utts = list(parsed.utterances)
    if args.utterance is not None:
        if not 0 <= args.utterance < len(utts):
            print(f"sodadata decode: --utterance must be in 0..{len(utts) - 1} for row {row['id']}", file=sys.stderr)
            return 2
        utts = [utts[args.utterance]]
    try:
        config = codec_config_from(args, found.record)
    except ValueError as exc:
        print(f"sodadata decode: {display(found.path)}: {exc}", file=sys.stderr)
        return 2
    if config.is_random:
        log.warning(NOT_REAL_WARNING.format(name=config.codec) + " Decoded audio is noise, not speech.")
    out = Path(args.out) if args.out else Path(f"{row['id']}.wav")
    try:
        decoder = get_decoder(config)
        waves = decoder.decode([chars_to_codes(u.audio, config.num_codebooks) for u in utts])
        wave = np.concatenate(waves)
        gain = write_audio(out, wave)
        if gain < 1.0:
            log.warning("decoded audio peaks above full scale: written %.3f times as loud to avoid clipping", gain)
    except (RuntimeError, ValueError) as exc:
        print(f"sodadata decode: {exc}", file=sys.stderr)
        return 1
    log.info("decoded %d utterance(s), %.2f s of audio in %.1fs", len(utts), wave.size / SAMPLE_RATE,
             decoder.stats.decode_seconds)
    # the command's own output: where the audio went and what is said in it
    print(f"{out}\t{row['id']}\t{wave.size / SAMPLE_RATE:.2f} s\t{len(utts)} utterance(s)")
    for u in utts:
        print(f"  [{u.index}] {u.seconds:6.2f} s  {u.text}")
    return 0


__all__ = [
    "AUDIO_FORMATS",
    "AUDIO_MIME",
    "FoundRow",
    "MimiDecoder",
    "ParsedRow",
    "Utterance",
    "add_codec_args",
    "audio_spans",
    "audio_suffix",
    "audio_to_str",
    "audio_to_string",
    "can_write",
    "codebooks_of",
    "codec_config_from",
    "compact_audio_format",
    "find_row",
    "find_rows",
    "get_decoder",
    "main",
    "parse_row",
    "row_files",
    "str_to_audio",
    "string_to_audio",
    "write_audio",
]
