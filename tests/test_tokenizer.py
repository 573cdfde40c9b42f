"""The extended tokenizer (SPEC §3) built on a small byte-level BPE base trained here, and the fast row encoder."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic import WORDS, make_output_dir
from tokenizers import AddedToken, Tokenizer, normalizers

from sodadata.encode.codes import AUDIO_BASE, codes_to_chars
from sodadata.mix.tokenizer import (
    N_AUDIO_TOKENS,
    RowEncoder,
    TokenizerLayout,
    build_tokenizer,
    check_tokenizer,
    is_hub_id,
    load_tokenizer,
    main,
    save_tokenizer,
    train_small_base,
)
from sodadata.write.document import (
    AUDIO_END,
    AUDIO_FIRST,
    AUDIO_START,
    BOS,
    EOS,
    MARKERS,
    TEXT_END,
    TEXT_FIRST,
    TEXT_START,
    EncodedUtterance,
    TextVerdict,
    apply_text_rule,
    format_speech_row,
    format_text_row,
)

CORPUS = [
    " ".join(WORDS[i:] + WORDS[:i]).capitalize() + ". It's 2024, isn't it? Yes: 42 models!" for i in range(len(WORDS))
] * 4
TRANSCRIPTS = [
    "The speech model learns from audio.",
    "  spaces  inside   and out ",
    "Numbers 1234567 and it's done!",
    "ĳssel ² ℌ, café vs cafe\u0301",  # NFKC/NFC-sensitive text (outside the audio range): the base decides
    "emoji 😀 and U+12000 𒀀 just above the audio range",
    "tabs\tand\nnewlines",
]


@pytest.fixture(scope="module")
def base() -> Tokenizer:
    return train_small_base(CORPUS, vocab_size=600)


@pytest.fixture(scope="module")
def tok(base: Tokenizer) -> Tokenizer:
    return build_tokenizer(base)


@pytest.fixture(scope="module")
def layout(tok: Tokenizer) -> TokenizerLayout:
    return TokenizerLayout.of(tok)


def _speech_row(rng: np.random.Generator, texts: list[str], fmt: str = TEXT_FIRST) -> str:
    utts = [
        EncodedUtterance(id=f"u{k}", doc_id="d", order=(k,), text=t, seconds=1.0,
                         audio=codes_to_chars(rng.integers(0, 2048, size=(8, int(rng.integers(1, 20))))))
        for k, t in enumerate(texts)
    ]
    return format_speech_row(utts, fmt)


def test_markers_and_audio_get_the_spec_ids(tok: Tokenizer, base: Tokenizer, layout: TokenizerLayout) -> None:
    assert layout.marker_ids == {TEXT_START: 128256, TEXT_END: 128257, AUDIO_START: 128258, AUDIO_END: 128259}
    assert layout.audio_base == 128260
    assert layout.vocab_size == 144_644
    # The base's own tokens keep their ids (BOS/EOS included): only additions are made.
    base_vocab = base.get_vocab(with_added_tokens=True)
    assert all(tok.token_to_id(t) == i for t, i in base_vocab.items())
    assert (layout.bos_id, layout.eos_id) == (base.token_to_id(BOS), base.token_to_id(EOS))
    # ... which on this small base are not Llama-3's 128000/128001: not SPEC §3 (test_tokenizer_llama3 is)
    assert (layout.bos_id, layout.eos_id) == (0, 1)
    assert not layout.matches_spec


def test_every_audio_character_is_one_token_that_decodes_to_itself(tok: Tokenizer) -> None:
    chars = [chr(AUDIO_BASE + k) for k in range(N_AUDIO_TOKENS)]
    encodings = tok.encode_batch_fast(chars, add_special_tokens=False)
    ids = [e.ids for e in encodings]
    assert ids == [[128260 + k] for k in range(N_AUDIO_TOKENS)]
    decoded = tok.decode_batch(ids, skip_special_tokens=False)
    assert decoded == chars
    # Characters that NFC/NFKC would rewrite (codebook 3 holds CJK compatibility ideographs, U+FEFF, U+FFFD).
    changed = [c for c in chars if unicodedata.normalize("NFKC", c) != c]
    assert len(changed) == 1595


def test_codes_map_to_ids_frame_major(tok: Tokenizer) -> None:
    codes = np.random.default_rng(1).integers(0, 2048, size=(8, 50))
    ids = tok.encode(codes_to_chars(codes), add_special_tokens=False).ids
    expected = (128260 + np.arange(8)[:, None] * 2048 + codes).T.reshape(-1)  # f0c0 f0c1 ... f1c0 ...
    assert ids == expected.tolist()


def test_markers_are_single_tokens(tok: Tokenizer, layout: TokenizerLayout) -> None:
    for m in MARKERS:
        assert tok.encode(m, add_special_tokens=False).ids == [tok.token_to_id(m)]
    joined = "".join(MARKERS)
    assert tok.encode(joined, add_special_tokens=False).ids == [tok.token_to_id(m) for m in MARKERS]


def test_row_has_one_bos_and_one_eos(tok: Tokenizer, layout: TokenizerLayout) -> None:
    rng = np.random.default_rng(0)
    rows = [_speech_row(rng, TRANSCRIPTS[:3], fmt) for fmt in (TEXT_FIRST, AUDIO_FIRST)]
    rows.append(format_text_row(CORPUS[0]))
    encoder = RowEncoder(tok)
    for row in rows:
        ids = encoder.encode(row).tolist()
        assert ids == tok.encode(row, add_special_tokens=False).ids
        assert ids[0] == layout.bos_id and ids.count(layout.bos_id) == 1
        assert ids[-1] == layout.eos_id and ids.count(layout.eos_id) == 1
        # The hazard this guards against: the Llama-style post-processor prepends a second BOS.
        assert tok.encode(row).ids[:2] == [layout.bos_id, layout.bos_id]


def test_text_spans_tokenize_as_the_base_alone(tok: Tokenizer, base: Tokenizer, layout: TokenizerLayout) -> None:
    rng = np.random.default_rng(2)
    row = _speech_row(rng, TRANSCRIPTS)
    ids = np.asarray(tok.encode(row, add_special_tokens=False).ids)
    starts = np.flatnonzero(ids == layout.marker_ids[TEXT_START])
    ends = np.flatnonzero(ids == layout.marker_ids[TEXT_END])
    assert all(apply_text_rule(t, transcript=False) == TextVerdict(t) for t in TRANSCRIPTS)  # kept, unchanged
    assert len(starts) == len(ends) == len(TRANSCRIPTS)
    for text, a, b in zip(TRANSCRIPTS, starts, ends):
        assert ids[a + 1:b].tolist() == base.encode(text, add_special_tokens=False).ids
    # A text row's body tokenizes as the base does too.
    body = CORPUS[3]
    assert tok.encode(format_text_row(body), add_special_tokens=False).ids[1:-1] == base.encode(
        body, add_special_tokens=False).ids


def test_normalizing_base_never_touches_audio(base: Tokenizer) -> None:
    nfkc = Tokenizer.from_str(base.to_str())
    nfkc.normalizer = normalizers.NFKC()
    built = build_tokenizer(nfkc)
    layout = check_tokenizer(built)
    # Text is normalized as the base would (the ligature becomes "ij") ...
    assert built.encode("ĳ", add_special_tokens=False).ids == built.encode("ij", add_special_tokens=False).ids
    # ... while an audio character NFKC rewrites (U+F900 -> U+8C48) is still its own token, and round-trips.
    ch = "\uf900"
    assert unicodedata.normalize("NFKC", ch) != ch
    ids = built.encode("ĳ" + ch + "\ufeff" + "ĳ", add_special_tokens=False).ids
    ij = built.encode("ij", add_special_tokens=False).ids
    audio = [layout.audio_base + 0xF900 - AUDIO_BASE, layout.audio_base + 0xFEFF - AUDIO_BASE]
    assert ids == ij + audio + ij
    assert built.decode(audio, skip_special_tokens=False) == ch + "\ufeff"


def test_fast_row_encoder_equals_the_tokenizer_on_generated_shards(tmp_path, tok: Tokenizer) -> None:
    make_output_dir(tmp_path, seed=3)
    rows = [r for p in sorted(tmp_path.glob("*/*/*.parquet")) for r in pq.read_table(p, columns=["text"])["text"]
            .to_pylist()]
    assert len(rows) > 40
    fast = RowEncoder(tok).encode_batch(rows)
    for row, ids in zip(rows, fast):
        assert ids.dtype == np.int32
        assert ids.tolist() == tok.encode(row, add_special_tokens=False).ids


_TEXT_ALPHABET = st.sampled_from(
    [*WORDS, " ", "  ", "\n", "'s", "12", "ĳ", "ﬁ", "é", "😀", "\U00012000", "\ud7ff", "x",
     *MARKERS, "<|sodadata_pad_400|>", "<|", "|>"]
)
_AUDIO_CHAR = st.integers(AUDIO_BASE, AUDIO_BASE + N_AUDIO_TOKENS - 1).map(chr)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.lists(_TEXT_ALPHABET, max_size=6).map("".join),
                          st.lists(_AUDIO_CHAR, min_size=1, max_size=12).map("".join)), max_size=8).map("".join))
def test_fast_row_encoder_equals_the_tokenizer_on_any_string(tok: Tokenizer, row: str) -> None:
    assert RowEncoder(tok).encode(row).tolist() == tok.encode(row, add_special_tokens=False).ids


def test_build_refuses_an_extended_base_and_a_base_without_bos(tok: Tokenizer, base: Tokenizer) -> None:
    with pytest.raises(ValueError, match="already extended"):
        build_tokenizer(tok)
    data = json.loads(base.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != BOS]
    data["model"]["vocab"].pop(BOS)
    data["post_processor"] = None
    with pytest.raises(ValueError, match="begin_of_text"):
        build_tokenizer(Tokenizer.from_str(json.dumps(data)))


def test_base_larger_than_llama3_keeps_the_layout_after_its_vocab(base: Tokenizer) -> None:
    big = Tokenizer.from_str(base.to_str())
    n = big.get_vocab_size(with_added_tokens=True)
    big.add_tokens([AddedToken(f"<extra_{i}>", special=True) for i in range(128_300 - n)])
    layout = check_tokenizer(build_tokenizer(big))
    assert layout.marker_ids[TEXT_START] == 128_300
    assert layout.audio_base == 128_304
    assert not layout.matches_spec


def test_cli_build_and_check_write_a_loadable_tokenizer(tmp_path, base: Tokenizer, tok: Tokenizer, capsys) -> None:
    base_path = tmp_path / "base" / "tokenizer.json"
    base_path.parent.mkdir()
    base.save(str(base_path))
    out = tmp_path / "built"
    assert main(["build", "--base", str(base_path), "--out", str(out)]) == 0
    assert "128256" in capsys.readouterr().out
    loaded = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert loaded.to_str() == tok.to_str()
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["sodadata"]["audio_base"] == 128260 and config["bos_token"] == BOS
    assert main(["check", str(out)]) == 0
    assert main(["build", "--base", str(out), "--out", str(tmp_path / "again")]) == 1
    assert "already extended" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "missing.json")]) == 1


@pytest.mark.slow
def test_transformers_autotokenizer_loads_the_saved_tokenizer(tmp_path, tok: Tokenizer) -> None:
    transformers = pytest.importorskip("transformers")
    save_tokenizer(tok, tmp_path)
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    row = _speech_row(np.random.default_rng(5), TRANSCRIPTS[:2])
    ids = auto(row, add_special_tokens=False)["input_ids"]
    assert ids == tok.encode(row, add_special_tokens=False).ids
    assert auto.decode(ids) == row


def test_bytes_base_is_built_offline_with_one_token_per_byte_and_is_reported_as_not_spec(tmp_path, caplog, capsys
                                                                                          ) -> None:
    with caplog.at_level("WARNING", logger="sodadata.mix.tokenizer"):
        assert main(["build", "--base", "bytes", "--out", str(tmp_path / "tok")]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "NOT SPEC §3's" in warnings[0]
    assert "NOT the SPEC §3 ids" in capsys.readouterr().out
    meta = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())["sodadata"]
    assert (meta["base"], meta["base_vocab_size"], meta["matches_spec"]) == ("bytes", 256, False)

    tok = load_tokenizer(str(tmp_path / "tok") + "/")
    layout = check_tokenizer(tok)
    assert (layout.bos_id, layout.eos_id, layout.base_vocab_size, layout.vocab_size) == (256, 257, 256, 144_644)
    # the markers and audio sit at SPEC §3's ids all the same (the base is padded up to 128,256)
    assert (layout.marker_ids[TEXT_START], layout.audio_base, layout.matches_spec) == (128_256, 128_260, False)
    for text in TRANSCRIPTS:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert ids == list(text.encode("utf-8"))  # byte b is token b: no merges, nothing normalized
        assert tok.decode(ids) == text
    row = _speech_row(np.random.default_rng(3), TRANSCRIPTS[:3])
    assert RowEncoder(tok).encode(row).tolist() == tok.encode(row, add_special_tokens=False).ids
    assert tok.encode("hi").ids == [256, ord("h"), ord("i")]  # Llama-3's BOS-prepending post-processor


def test_matches_spec_needs_a_base_of_llama3s_size_with_its_bos_and_eos(base: Tokenizer) -> None:
    """A base shaped like Llama-3's (128,000 BPE tokens, then 256 specials from BOS 128000) matches SPEC §3; the
    bytes base padded to the same BOS/EOS ids does not: its text ids are not Llama-3's."""
    from tokenizers import models

    from sodadata.mix.tokenizer import _byte_symbols, _llama3_shaped

    def shaped(text_vocab: list[str]) -> Tokenizer:
        tok = _llama3_shaped(models.BPE(vocab={t: i for i, t in enumerate(text_vocab)}, merges=[]))
        filler = [AddedToken(f"<|filler_{i}|>", special=True) for i in range(len(text_vocab), 128_000)]
        tok.add_special_tokens(filler)
        tok.add_special_tokens([AddedToken(BOS, special=True), AddedToken(EOS, special=True)])
        tok.add_special_tokens([AddedToken(f"<|reserved_{i}|>", special=True) for i in range(2, 256)])
        return tok

    llama3_like = shaped([*_byte_symbols(), *(f"w{i}" for i in range(128_000 - 256))])
    layout = check_tokenizer(build_tokenizer(llama3_like))
    assert (layout.bos_id, layout.eos_id, layout.base_vocab_size, layout.matches_spec) == (128_000, 128_001, 128_000,
                                                                                           True)
    layout = check_tokenizer(build_tokenizer(shaped(_byte_symbols())))
    assert (layout.bos_id, layout.eos_id, layout.audio_base) == (128_000, 128_001, 128_260)
    assert not layout.matches_spec


@pytest.mark.parametrize("spec, hub", [("org/name", True), ("marin-tokenizer", True), ("tok/", False),
                                       ("./tok", False), ("a/b/c", False), ("tok.json", False), ("/abs/tok", False)])
def test_only_what_could_be_a_hub_id_goes_to_the_hub(spec: str, hub: bool) -> None:
    assert is_hub_id(spec) is hub


def test_a_missing_tokenizer_path_is_no_such_file_not_a_hub_error(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^no such file or directory: tok/ "):
        load_tokenizer("tok/")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"^no tokenizer.json in empty"):
        load_tokenizer("empty")


def test_every_command_that_loads_a_tokenizer_path_says_no_such_file(tmp_path, monkeypatch, capsys, caplog) -> None:
    """stats, inspect, export and train, given a tokenizer folder that does not exist (recipes/sample.yaml names
    ``tok/``): one line "no such file or directory: tok/", never a Hub repo-id validation error."""
    from sodadata.mix import export
    from sodadata.tools import listening_report, stats
    from train import cli as train_cli

    repo = Path(__file__).resolve().parent.parent
    out = tmp_path / "out"
    make_output_dir(out)
    monkeypatch.chdir(tmp_path)
    recipe = str(repo / "recipes" / "sample.yaml")
    runs = {
        "stats": lambda: stats.main([str(out), "--tokenizer", "tok/", "--utterance-shards", "0"]),
        "inspect": lambda: listening_report.main([str(out), "--html", "report", "--tokenizer", "tok/"]),
        "export": lambda: export.main(["levanter", recipe, "--data", str(out), "--tokenizer-out", "lev-tok/"]),
        "train": lambda: train_cli.main(["--recipe", recipe, "--data", str(out), "--steps", "1"]),
    }
    for name, run in runs.items():
        caplog.clear()
        assert run() != 0, name
        said = capsys.readouterr().err + caplog.text
        assert "no such file or directory: tok/" in said, (name, said)
        assert "HFValidationError" not in said and "Repo id" not in said, name
