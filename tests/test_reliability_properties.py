"""Property tests (hypothesis): the character mapping, the document formatter and the validator's parser, the
transcript guard, and the two stream readers the campaign fixed (zstd frames and pieces, tar end detection)."""

from __future__ import annotations

import io
import json
import re
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sodadata.encode.codes import AUDIO_BASE, CODEBOOK_SIZE, chars_to_codes, codes_to_chars, span_error
from sodadata.read.recipe import ShardError
from sodadata.recipes.emilia import _read_tar
from sodadata.recipes.nemotron_cc import decompressed_chunks
from sodadata.write.document import (
    AUDIO_END,
    AUDIO_FIRST,
    AUDIO_ONLY,
    AUDIO_SPAN,
    AUDIO_START,
    BOS,
    EOS,
    MARKERS,
    TEXT_FIRST,
    EncodedUtterance,
    apply_text_rule,
    format_speech_row,
    parse_row,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def code_arrays(draw, n_codebooks: int | None = None) -> np.ndarray:
    n = n_codebooks or draw(st.integers(1, 8))
    frames = draw(st.integers(0, 40))
    flat = draw(st.lists(st.integers(0, CODEBOOK_SIZE - 1), min_size=n * frames, max_size=n * frames))
    return np.array(flat, dtype=np.int64).reshape(n, frames)


# Characters near every boundary that matters: each codebook's ends, the Private Use Area's end, U+FEFF/FFFD/FFFE/
# FFFF inside codebook 3, plane 1, the end of the audio range, plain text.
EDGES = [AUDIO_BASE + b * CODEBOOK_SIZE + d for b in range(8) for d in (0, 1, CODEBOOK_SIZE - 1)]
EDGES += [0xF8FF, 0xFEFF, 0xFFFD, 0xFFFE, 0xFFFF, 0x10000, 0x11FFF, 0x12000, 0x41, 0x20, 0xE9]
span_chars = st.one_of(st.sampled_from(EDGES), st.integers(AUDIO_BASE, 0x12000)).filter(
    lambda c: not 0xD800 <= c <= 0xDFFF).map(chr)


@SETTINGS
@given(code_arrays())
def test_codes_round_trip_through_characters(codes):
    chars = codes_to_chars(codes)
    n = codes.shape[0]
    assert len(chars) == codes.size
    assert span_error(chars, n) is None
    np.testing.assert_array_equal(chars_to_codes(chars, n), codes)
    if codes.size:
        assert parse_row(BOS + AUDIO_START + chars + AUDIO_END + EOS, AUDIO_ONLY, n, strict=False).problems == ()


def _span_problems(span: str) -> list[tuple[int, str]]:
    """The audio_span faults the row reader finds in ``span`` (as validate reports them), offsets into the span."""
    start = len(BOS) + len(AUDIO_START)
    parsed = parse_row(BOS + AUDIO_START + span + AUDIO_END + EOS, AUDIO_ONLY, strict=False)
    return [(p.offset - start, p.what) for p in parsed.problems if p.check == AUDIO_SPAN]


@SETTINGS
@given(st.lists(span_chars, min_size=1, max_size=40).map("".join))
def test_the_validator_and_span_error_agree_on_every_span(text):
    """The row reader's span check (validate's) is the SPEC §1 definition, exactly as codes.span_error words it."""
    mine, theirs = _span_problems(text), span_error(text)
    assert (not mine) == (theirs is None), (mine, theirs)
    if theirs is not None:
        assert [what for _, what in mine] == [theirs]
        if theirs.startswith("character"):
            assert mine[0][0] == int(re.match(r"character (\d+)", theirs)[1])


@SETTINGS
@given(code_arrays(8))
def test_every_audio_string_survives_parquet_and_json_unchanged(codes):
    chars = codes_to_chars(codes)
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": pa.array([chars], pa.large_string())}), buf, compression="zstd")
    assert pq.read_table(io.BytesIO(buf.getvalue())).column("text")[0].as_py() == chars
    assert json.loads(json.dumps({"t": chars}, ensure_ascii=False))["t"] == chars
    assert json.loads(json.dumps({"t": chars}))["t"] == chars


transcripts = st.text(min_size=1, max_size=30).map(apply_text_rule).filter(lambda v: v.reason is None).map(lambda v: v.text)


@st.composite
def documents(draw) -> list[EncodedUtterance]:
    n = draw(st.integers(1, 5))
    utts = []
    for i in range(n):
        codes = draw(code_arrays(8).filter(lambda c: c.size > 0))
        utts.append(EncodedUtterance(id=f"d_W{i}", doc_id="d", order=(i,), text=draw(transcripts),
                                     audio=codes_to_chars(codes), seconds=codes.shape[1] * 0.08))
    return utts


@SETTINGS
@given(documents())
def test_both_formats_of_any_document_parse_back_to_the_same_pairs(utts):
    expected = [(u.text, u.audio) for u in utts]
    for fmt in (TEXT_FIRST, AUDIO_FIRST):
        row = format_speech_row(utts, fmt)
        assert row.count(BOS) == 1 and row.count(EOS) == 1 and row.startswith(BOS) and row.endswith(EOS)
        parsed = parse_row(row, fmt, strict=False)
        assert parsed.problems == () and [(u.text, u.audio) for u in parsed.utterances] == expected
        # and read in the other format's order, the same row is a structural fault at once
        other = AUDIO_FIRST if fmt == TEXT_FIRST else TEXT_FIRST
        assert parse_row(row, other, strict=False).structural


@SETTINGS
@given(st.text(max_size=20), st.text(max_size=20), st.one_of(st.sampled_from(MARKERS),
                                                               st.integers(AUDIO_BASE, 0x11FFF).map(chr)))
def test_a_transcript_holding_a_marker_or_an_audio_character_is_never_written_as_it_is(before, after, intruder):
    verdict = apply_text_rule(before + intruder + after)
    if verdict.reason is None:  # the intruder was a range character that folds or drops (rule 2, SPEC §2)
        assert intruder not in verdict.text and verdict.folded + verdict.dropped >= 1
    else:
        assert verdict.reason in ("transcript_has_marker", "audio_range_character", "invalid_unicode", "empty_transcript")


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["zeros", "text", "random"]), st.integers(0, 300_000),
                          st.booleans(), st.booleans(), st.integers(1, 19)), min_size=1, max_size=4),
       st.sampled_from([1, 5, 4096, 1 << 20]), st.sampled_from([7, 4096, 65536]), st.integers(0, 2**32 - 1),
       st.floats(0, 1))
def test_zstd_frames_give_every_byte_in_bounded_pieces_and_a_cut_inside_a_frame_fails(
    frames, read_bytes, chunk_bytes, seed, where
):
    rng = np.random.default_rng(seed)
    blob, expected = b"", b""
    ends = {0: b""}  # offset of each frame's end -> the data of the frames up to it
    for kind, size, checksum, content_size, level in frames:
        data = (b"\0" * size if kind == "zeros" else (b"common crawl text %d\n" % size) * (size // 20)
                if kind == "text" else rng.bytes(size))
        cctx = zstandard.ZstdCompressor(level=level, write_checksum=checksum, write_content_size=content_size)
        if content_size:
            blob += cctx.compress(data)
        else:  # streamed frames carry no content size and may end with an empty last block
            out = io.BytesIO()
            with cctx.stream_writer(out, closefd=False) as w:
                w.write(data)
            blob += out.getvalue()
        expected += data
        ends[len(blob)] = expected
    got = list(decompressed_chunks(io.BytesIO(blob), read_bytes, chunk_bytes))
    assert b"".join(got) == expected
    assert max((len(c) for c in got), default=0) <= chunk_bytes  # whatever the compression ratio
    cut = int(where * len(blob))
    if cut in ends and cut > 0:  # between two frames: valid zstd (the file's size tells, in the recipe)
        assert b"".join(decompressed_chunks(io.BytesIO(blob[:cut]), read_bytes, chunk_bytes)) == ends[cut]
    else:
        with pytest.raises(ShardError, match="truncated" if cut else "empty file"):
            b"".join(decompressed_chunks(io.BytesIO(blob[:cut]), read_bytes, chunk_bytes))


def _tar(sizes: list[int]) -> tuple[bytes, int]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i, size in enumerate(sizes):
            for ext, data in ((".json", b'{"text": " t"}'), (".mp3", bytes(size))):
                info = tarfile.TarInfo(f"EN_B00000_S00000_W{i:06d}{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        last = tar.getmembers()[-1]
    return data, last.offset_data + -(-last.size // 512) * 512


@SETTINGS
@given(st.lists(st.integers(0, 3000), min_size=1, max_size=6), st.floats(0, 1))
def test_a_tar_cut_anywhere_fails_or_reads_every_member(sizes, where):
    """Never fewer items without an error: a cut tar either raises or (cut inside its end blocks) reads whole."""
    data, end_of_members = _tar(sizes)
    cut = int(where * len(data))
    try:
        items = list(_read_tar(io.BytesIO(data[:cut]), "x.tar"))
    except (ShardError, tarfile.TarError, EOFError, OSError):
        assert cut < end_of_members + 512, "a tar with its end-of-archive block failed"
        return
    assert cut >= end_of_members + 512, f"cut at {cut} of {len(data)} read {len(items)} items without an error"
    assert len(items) == len(sizes)
