"""String -> audio (issue 9): row parsing, round trips through the tiny-random Mimi, the notebook helpers and the
``sodadata decode`` command. tiny-random's codes are NOT real Mimi codes: these tests check lengths, exactness
and determinism of the plumbing, not how speech sounds."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from fixtures import make_emilia_source, speechlike

import sodadata
from sodadata import audio_to_str, audio_to_string, str_to_audio, string_to_audio
from sodadata.encode.audio import to_mono_24k
from sodadata.encode.codec import CodecConfig, get_encoder, reference_encode
from sodadata.encode.codes import chars_to_codes, codes_to_chars, frames_for_samples
from sodadata.recipes.emilia import EmiliaRecipe
from sodadata.run.pipeline import PipelineConfig
from sodadata.run.runner import RunnerConfig, run_recipe
from sodadata.tools.audio_files import can_write, write_audio
from sodadata.tools.mimi_decoder import MimiDecoder, get_decoder
from sodadata.tools.row_lookup import find_row
from sodadata.write.document import (
    AUDIO_END,
    AUDIO_FIRST,
    AUDIO_START,
    BOS,
    EOS,
    TEXT_END,
    TEXT_FIRST,
    TEXT_START,
    EncodedUtterance,
    Utterance,
    audio_spans,
    format_speech_row,
    format_text_row,
    parse_row,
)

TINY = "tiny-random"
CFG = CodecConfig(codec=TINY)


def _random_span(frames: int, seed: int) -> str:
    return codes_to_chars(np.random.default_rng(seed).integers(0, 2048, size=(8, frames)))


def _utts(spans: list[str], texts: list[str]) -> list[EncodedUtterance]:
    return [EncodedUtterance(id=f"d_W{i:06d}", doc_id="d", order=(i,), text=t, audio=a, seconds=len(a) / 100)
            for i, (t, a) in enumerate(zip(texts, spans))]


# ---------------------------------------------------------------------------------------------------- parsing


def test_parse_row_gives_the_utterances_in_order_for_both_formats():
    spans = [_random_span(n, i) for i, n in enumerate((3, 1, 7))]
    texts = ["First one.", "  spaced  inside ", "Third: ünïcode — ok"]
    utts = _utts(spans, texts)
    for fmt in (TEXT_FIRST, AUDIO_FIRST):
        row = format_speech_row(utts, fmt)
        for given in (fmt, None):  # the format column, or inferred from the first piece
            parsed = parse_row(row, given)
            assert parsed.format == fmt
            assert parsed.utterances == tuple(Utterance(i, t, a) for i, (t, a) in enumerate(zip(texts, spans)))
            assert [u.frames for u in parsed.utterances] == [3, 1, 7]
            assert parsed.audio_frames == 11
    text_row = parse_row(format_text_row("Just <web> text."), "text")
    assert (text_row.format, text_row.utterances, text_row.body) == ("text", (), "Just <web> text.")
    assert parse_row(format_text_row("inferred")).format == "text"


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        (TEXT_START + "a" + TEXT_END + EOS, None, r"^offset 0: row does not start with <\|begin_of_text\|>$"),
        (BOS + TEXT_START + "a" + TEXT_END, None, r"^offset 44: row does not end with <\|end_of_text\|>$"),
        (BOS + TEXT_START + "a" + EOS, None, r"^offset 17: utterance opened by <\|text_start\|> is never completed"),
        (BOS + AUDIO_END + EOS, None, r"^offset 17: expected <\|audio_start\|>, found <\|audio_end\|>"),
        (BOS + TEXT_START + "a" + TEXT_END + EOS, TEXT_FIRST, "utterance opened by <\\|text_start\\|> is never"),
        (BOS + AUDIO_START + "\ue000" * 8 + AUDIO_END + TEXT_START + "a" + TEXT_END + EOS, TEXT_FIRST,
         r"^offset 17: expected <\|text_start\|>, found <\|audio_start\|> \(text_first order is"),
        (BOS + TEXT_START + "a" + TEXT_END + AUDIO_START + "\ue000" * 7 + AUDIO_END + EOS, TEXT_FIRST,
         "^offset 66: length 7 is not a multiple of 8$"),
        (BOS + TEXT_START + "a" + TEXT_END + AUDIO_START + "\ue000" * 16 + AUDIO_END + EOS, TEXT_FIRST,
         r"^offset 60: character 1 \(U\+E000\) is not in codebook 1's range"),
        (BOS + "text" + TEXT_START + "a" + TEXT_END + EOS, "text", r"^offset 21: marker <\|text_start\|> in a text row"),
        (BOS + "x" + EOS, "weird", "unknown row format 'weird'"),
    ],
)
def test_parse_row_says_what_is_wrong(text, fmt, message):
    with pytest.raises(ValueError, match=message):
        parse_row(text, fmt)


def test_a_lenient_read_lists_every_fault_and_a_transcript_fault_never_raises():
    a = _random_span(2, 3)
    row = format_speech_row(_utts([a, a[:-1], a], [" padded ", "two", "three"]), TEXT_FIRST)
    parsed = parse_row(row, TEXT_FIRST, strict=False)
    start = row.index(TEXT_START) + len(TEXT_START)
    assert [(p.check, p.offset) for p in parsed.problems] == [("transcript", start), ("audio_span", row.index(
        a[:-1] + AUDIO_END) + len(a) - 1)]
    assert [u.text for u in parsed.utterances] == [" padded ", "two", "three"] and not parsed.structural
    with pytest.raises(ValueError, match="length 15 is not a multiple of 8"):
        parse_row(row, TEXT_FIRST)
    fine = format_speech_row(_utts([a], [" padded "]), TEXT_FIRST)
    assert parse_row(fine).utterances[0].text == " padded "  # the transcript fault is listed, not raised
    assert [p.check for p in parse_row(fine).problems] == ["transcript"]


def test_audio_spans_finds_spans_in_bare_marked_and_row_strings():
    a, b = _random_span(2, 1), _random_span(3, 2)
    assert audio_spans(a) == [a]
    assert audio_spans(AUDIO_START + a + AUDIO_END) == [a]
    row = format_speech_row(_utts([a, b], ["x", "y"]), AUDIO_FIRST)
    assert audio_spans(row) == [a, b]
    with pytest.raises(ValueError, match="nothing to decode"):
        audio_spans(TEXT_START + "only text" + TEXT_END)
    with pytest.raises(ValueError, match="malformed"):
        audio_spans(a[:-1])
    with pytest.raises(ValueError, match="is never closed"):
        audio_spans(AUDIO_START + a)
    with pytest.raises(ValueError, match="is not closed by"):
        audio_spans(AUDIO_START + a + TEXT_START + "x" + TEXT_END)
    with pytest.raises(ValueError, match="closes no open audio span"):
        audio_spans(a + AUDIO_END)


# ---------------------------------------------------------------------------------------------------- round trip


def test_round_trip_has_frames_times_1920_samples_and_reencoding_is_deterministic():
    x16 = speechlike(2.37, seed=5, sr=16_000)  # not a whole number of frames, and not 24 kHz
    n24 = to_mono_24k(x16, 16_000, max_seconds=None).size
    s = audio_to_string(x16, 16_000, codec=TINY)
    frames = frames_for_samples(n24)
    assert len(s) == 8 * frames
    assert chars_to_codes(s).shape == (8, frames)

    wave = string_to_audio(s, codec=TINY)
    assert wave.dtype == np.float32 and wave.shape == (frames * 1920,)
    assert np.isfinite(wave).all() and wave.std() > 0
    np.testing.assert_array_equal(wave, string_to_audio(s, codec=TINY))  # decoding is deterministic

    again = audio_to_string(wave, 24_000, codec=TINY)
    assert again == audio_to_string(wave.copy(), 24_000, codec=TINY)  # re-encoding is deterministic
    assert len(again) == len(s)  # frames x 1920 samples encode to the same number of frames
    # "the same tiny model": the decoder's own (full) model encodes the decoded audio to the same codes as the
    # encoder-only model the helpers use, so encode and decode share weights
    np.testing.assert_array_equal(reference_encode(get_decoder(CFG).model, wave), chars_to_codes(again))


def test_audio_to_string_accepts_numpy_torch_channels_and_int_pcm():
    x = speechlike(1.3, seed=11)
    ref = audio_to_string(x, 24_000, codec=TINY)
    assert ref == codes_to_chars(get_encoder(CFG).encode([x])[0])  # the pipeline's encoder, same string
    t = torch.from_numpy(x)
    assert audio_to_str(t, 24_000, codec=TINY) == ref
    assert audio_to_string(t[None, None], 24_000, codec=TINY) == ref  # (1, 1, n) as fed to MimiModel.encode
    assert audio_to_string(t[None].double().requires_grad_(), 24_000, codec=TINY) == ref
    assert audio_to_string(np.stack([x, x], axis=1), 24_000, codec=TINY) == ref  # (n, 2), soundfile layout
    assert audio_to_string(torch.stack([t, t]), 24_000, codec=TINY) == ref  # (2, n), torchaudio layout
    assert audio_to_string(x, 24_000, codec=CFG, markers=True) == AUDIO_START + ref + AUDIO_END
    pcm = np.round(x * 32767).astype(np.int16)
    assert audio_to_string(pcm, 24_000, codec=TINY) == audio_to_string(pcm.astype(np.float32) / 32767, codec=TINY)
    assert audio_to_string(pcm, 24_000, codec=TINY) != audio_to_string(pcm.astype(np.float32), codec=TINY)
    model = get_decoder(CFG).model
    with pytest.raises(TypeError, match="not SODA's"):
        audio_to_str(x, model, "cpu")  # SODA's own helpers' signature: a clear error, not a wrong result
    with pytest.raises(TypeError, match="codec=model"):
        str_to_audio(ref, model)


def test_helpers_accept_a_loaded_model_and_are_exported_under_both_names():
    model = get_decoder(CFG).model
    x = speechlike(0.9, seed=3)
    s = audio_to_string(x, codec=model)
    assert s == audio_to_string(x, codec=TINY)
    np.testing.assert_allclose(str_to_audio(s, codec=model), string_to_audio(s, codec=TINY), atol=1e-5)
    assert sodadata.audio_to_str is sodadata.audio_to_string and sodadata.str_to_audio is sodadata.string_to_audio


def test_a_whole_row_decodes_to_its_utterances_joined_in_order():
    waves = [speechlike(sec, seed=20 + i) for i, sec in enumerate((0.7, 1.45, 0.31))]
    spans = [audio_to_string(w, codec=TINY) for w in waves]
    singles = [string_to_audio(s, codec=TINY) for s in spans]
    assert [w.size for w in singles] == [frames_for_samples(w.size) * 1920 for w in waves]
    expected = np.concatenate(singles)
    for fmt in (TEXT_FIRST, AUDIO_FIRST):
        row = format_speech_row(_utts(spans, ["a", "b", "c"]), fmt)
        np.testing.assert_allclose(string_to_audio(row, codec=TINY), expected, atol=1e-5)
    # order matters: the same utterances reversed give a different waveform
    reversed_row = format_speech_row(_utts(spans[::-1], ["c", "b", "a"]), TEXT_FIRST)
    assert not np.allclose(string_to_audio(reversed_row, codec=TINY), expected, atol=1e-3)


def test_output_sample_rate_is_resampled():
    s = _random_span(25, 7)  # 2 s
    assert string_to_audio(s, 16_000, codec=TINY).size == 32_000


def test_long_utterances_decode_in_pieces_like_a_whole_decode():
    codes = np.random.default_rng(1).integers(0, 2048, size=(8, 27))
    whole = get_decoder(CFG)
    ref = whole.decode([codes])[0]
    full_context = MimiDecoder(CFG, model=whole.model, piece_frames=8, context_frames=24)
    got = full_context.decode([codes])[0]
    assert full_context.stats.batches == 4  # 27 frames in pieces of 8
    assert got.shape == ref.shape == (27 * 1920,)
    np.testing.assert_allclose(got, ref, atol=1e-4)  # each piece saw all of its left context: same samples
    no_context = MimiDecoder(CFG, model=whole.model, piece_frames=8, context_frames=0).decode([codes])[0]
    assert no_context.shape == ref.shape
    assert np.abs(no_context - ref).max() > 1e-2  # without context the seams differ: the context is what helps


def test_the_decoder_gives_mimimodel_decode_s_samples_without_onednn_s_transposed_convolutions():
    """The CPU decoder runs its transposed convolutions with ATen's kernel (oneDNN JIT-builds one per input length:
    seconds for tiny-random's narrow layers): the samples are MimiModel.decode's, to float rounding."""
    from sodadata.encode.codec_random import build_random_mimi

    model = build_random_mimi(TINY)
    rng = np.random.default_rng(5)
    codes = [rng.integers(0, 2048, size=(8, n)) for n in (40, 53, 61)]
    with torch.inference_mode():
        expected = [model.decode(torch.from_numpy(c)[None]).audio_values[0, 0].numpy() for c in codes]
    transposed = [m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose1d)]
    assert transposed and all(type(m) is torch.nn.ConvTranspose1d or m.groups > 1 for m in transposed)
    decoder = MimiDecoder(CFG, model=model)
    swapped = [m for m in transposed if type(m) is not torch.nn.ConvTranspose1d]
    assert len(swapped) == sum(m.groups == 1 for m in transposed) >= 4  # the SEANet decoder's upsampling layers
    got = decoder.decode(codes)
    for w, e in zip(got, expected):
        assert w.shape == e.shape and np.abs(e).max() > 1e-2
        np.testing.assert_allclose(w, e, atol=1e-4)
    assert not np.array_equal(got[0][: got[1].size], got[1][: got[0].size])  # different codes, different audio


def test_padded_batches_decode_like_one_at_a_time():
    rng = np.random.default_rng(2)
    codes = [rng.integers(0, 2048, size=(8, n)) for n in (3, 11, 6, 1)]
    batched = MimiDecoder(CodecConfig(codec=TINY, batch_size=8), model=get_decoder(CFG).model)
    got = batched.decode(codes)
    assert max(batched.stats.by_batch_size) > 1
    for c, w in zip(codes, got):
        assert w.size == c.shape[1] * 1920
        np.testing.assert_allclose(w, get_decoder(CFG).decode([c])[0], atol=1e-4)
    with pytest.raises(ValueError, match=r"lie in \[0, 2048\)"):
        batched.decode([np.full((8, 2), 2048)])


@pytest.mark.parametrize("fmt", ["wav", "mp3", "opus", "flac"])
def test_write_audio_formats(tmp_path, fmt):
    if not can_write(fmt):
        pytest.skip(f"this libsndfile cannot write {fmt}")
    x = speechlike(1.5, seed=1) * 0.5
    path = tmp_path / f"a.{'ogg' if fmt == 'opus' else fmt}"
    assert write_audio(path, x, fmt=fmt) == 1.0
    y, sr = sf.read(path, dtype="float32")
    assert sr == 24_000
    assert abs(y.size - x.size) <= (0 if fmt in ("wav", "flac") else 2400)  # lossy coders add a little padding
    if fmt in ("wav", "flac"):
        np.testing.assert_allclose(y, x, atol=1 / 32767)
    loud = tmp_path / "loud.wav"
    gain = write_audio(loud, x * 8)
    assert gain == pytest.approx(0.99 / np.abs(x * 8).max())
    assert np.abs(sf.read(loud)[0]).max() <= 0.99 + 1e-4


# ---------------------------------------------------------------------------------------------------- pipeline output


@pytest.fixture(scope="module")
def emilia(tmp_path_factory):
    """A real output directory: the Emilia recipe run on a fixture corpus with the tiny-random codec."""
    root = tmp_path_factory.mktemp("emilia-src")
    exp = make_emilia_source(root, seed=9, quirks=False, tars_per_subset=1, docs_per_tar=1, utts_per_doc=3,
                             seconds=(0.5, 1.2))
    out = tmp_path_factory.mktemp("emilia-out")
    result = run_recipe(EmiliaRecipe(source=str(root)), PipelineConfig(out=str(out), codec=CFG),
                        RunnerConfig(serial=True))
    assert result.ok, result.failures
    mp3 = {}
    for tar_path in root.rglob("*.tar"):
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".mp3"):
                    mp3[m.name[:-4]] = tar.extractfile(m).read()
    return out, exp, mp3


def test_notebook_strings_equal_pipeline_strings(emilia):
    out, exp, mp3 = emilia
    checked = 0
    for docs in exp.documents.values():
        for doc, utt_ids in docs.items():
            row = find_row(out, f"{doc}_type1").row
            parsed = parse_row(row["text"], row["format"])
            assert [u.text for u in parsed.utterances] == [exp.transcripts[u] for u in utt_ids]
            for uid, u in zip(utt_ids, parsed.utterances):
                samples, sr = sf.read(io.BytesIO(mp3[uid]), dtype="float32")  # as a notebook user loads it
                assert audio_to_string(samples, sr, codec=TINY) == u.audio
                checked += 1
    assert checked == 6


def test_decode_cli_writes_the_row_audio(emilia, tmp_path, capsys):
    from sodadata.cli import main as cli

    out, exp, _ = emilia
    doc = next(iter(exp.documents["emilia/en"]))
    row = find_row(out, f"{doc}_type2").row
    expected = string_to_audio(row["text"], codec=TINY)
    frames = sum(u.frames for u in parse_row(row["text"], row["format"]).utterances)
    assert expected.size == frames * 1920

    wav = tmp_path / "row.wav"
    # no --codec: the shard's record names tiny-random
    assert cli(["decode", str(out), "--id", f"{doc}_type2", "--out", str(wav)]) == 0
    got, sr = sf.read(wav, dtype="float32")
    assert sr == 24_000 and got.size == expected.size
    gain = min(1.0, 0.99 / np.abs(expected).max())  # tiny-random decodes loud: written scaled to a 0.99 peak
    np.testing.assert_allclose(got, expected * gain, atol=2 / 32767)
    printed = capsys.readouterr().out
    assert str(wav) in printed and all(u.text in printed for u in parse_row(row["text"]).utterances)

    # a document id finds its _type1 row: the same audio
    wav1 = tmp_path / "doc.wav"
    assert cli(["decode", str(out), "--id", doc, "--out", str(wav1)]) == 0
    np.testing.assert_allclose(sf.read(wav1, dtype="float32")[0], got, atol=2 / 32767)

    one = tmp_path / "u1.wav"
    assert cli(["decode", str(out), "--id", f"{doc}_type1", "--utterance", "1", "--out", str(one)]) == 0
    second = parse_row(row["text"]).utterances[1]
    assert sf.info(one).frames == second.frames * 1920


def test_decode_cli_errors_say_what_to_do(emilia, tmp_path, capsys):
    from sodadata.tools.decode import main

    out, exp, _ = emilia
    assert main([str(out), "--id", "no-such-row", "--out", str(tmp_path / "x.wav")]) == 1
    assert "no row with id 'no-such-row'" in capsys.readouterr().err
    doc = next(iter(exp.documents["emilia/en"]))
    assert main([str(out), "--id", doc, "--utterance", "9", "--out", str(tmp_path / "x.wav")]) == 2
    assert "--utterance must be in 0..2" in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()
    text_dir = tmp_path / "text"
    from synthetic import ComponentSpec, make_output_dir

    make_output_dir(text_dir, (ComponentSpec("nemotron-cc/hq-actual", shards=1, docs_per_shard=2, text_only=True),))
    text_id = pq.read_table(next(text_dir.rglob("shard-*.parquet")), columns=["id"])["id"][0].as_py()
    assert main([str(text_dir), "--id", text_id, "--codec", TINY]) == 1
    assert "is a text row" in capsys.readouterr().err


def test_find_row_finds_rows_across_components_with_their_records(emilia):
    out, exp, _ = emilia
    docs = [d for comp in exp.documents.values() for d in comp]
    hits = {d: find_row(out, f"{d}_type2") for d in docs}
    assert all(h.row["id"] == f"{d}_type2" and h.row["format"] == AUDIO_FIRST for d, h in hits.items())
    assert all(h.path.suffix == ".parquet" and h.record["codec"]["codec"] == TINY for h in hits.values())
    assert {h.record["component"] for h in hits.values()} == {"emilia/en", "emilia-yodas/en"}
