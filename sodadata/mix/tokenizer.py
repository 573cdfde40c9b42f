"""The extended tokenizer (SPEC.md §3): a base tokenizer plus four markers and the 16,384 audio characters.

``--codebooks N`` (1-8, default 8) adds only the ``N x 2048`` audio characters that rows of ``N`` codebooks use
(``sodadata.recipes.* --codebooks N``), at the same ids (``128260 + i*2048 + code``, ``i < N``): ``N = 8`` is SPEC
§3 exactly, and a model trained on fewer codebooks has no embedding rows it never sees. The tokenizer's ``N`` is
read back from its vocabulary (:attr:`TokenizerLayout.codebooks`) and written to ``tokenizer_config.json``; rows
holding audio of a codebook it lacks are refused (:class:`RowEncoder`, and the mixture stream before it starts).

``sodadata tokenizer build --base stanford-crfm/marin-tokenizer --out DIR`` writes ``DIR/tokenizer.json`` (and a
``tokenizer_config.json`` so ``transformers.AutoTokenizer.from_pretrained(DIR)`` loads it too).

Id layout. With the Llama-3 base (128,256 tokens) the markers get 128256..128259 and the audio character of
codebook ``i``, code ``c`` gets ``128260 + i*2048 + c``, exactly as SPEC §3. A smaller base (the tests train a
few-hundred-token BPE) is padded with unused special tokens ``<|sodadata_pad_N|>`` up to id 128255, so the SPEC's
ids hold for every base of at most 128,256 tokens and a model or data cache never depends on the base's size. A
larger base cannot hold them: its markers start at its vocabulary size and audio follows in the same order (a
warning says so); :class:`TokenizerLayout` reads the actual ids from any built tokenizer.

Why audio survives untouched: every marker and audio character is an added *special* token with
``normalized=False``. The tokenizer splits those out of the raw string before the base's normalizer,
pre-tokenizer and BPE see anything, so no NFC/NFKC normalizer touches them, each is exactly one token, and
``decode(ids, skip_special_tokens=False)`` gives the characters back. :func:`check_tokenizer` proves this on all
16,384 characters after every build (and on load, via :class:`RowEncoder`).

Rows carry their own ``<|begin_of_text|>``/``<|end_of_text|>`` strings (SPEC §2), while the Llama-3 base's
post-processor prepends BOS again: rows are always encoded with ``add_special_tokens=False``. The base's
post-processor is kept unchanged so the tokenizer still behaves like the published one on plain text.

Speed: running 360,000 audio characters of a Yodas row through the added-token matcher and BPE is needless
work. :class:`RowEncoder` maps audio runs straight to ids (``audio_base + ord(c) - 0xE000``) with NumPy and
sends only the text between them (markers and transcripts) through the tokenizer; since audio characters are
added tokens, the tokenizer itself cuts the row at exactly those points, so the result is identical (tested on
every generated row and on adversarial ones).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Tokenizer

from sodadata.cli import OneLineParser, setup_logging
from sodadata.encode.codes import (
    AUDIO_BASE,
    AUDIO_END_CODEPOINT,
    CODEBOOK_SIZE,
    NUM_CODEBOOKS,
    parse_codebooks,
)
from sodadata.locations import local_path
from sodadata.write.document import AUDIO_END, AUDIO_START, BOS, EOS, TEXT_END, TEXT_START

log = logging.getLogger(__name__)

DEFAULT_BASE = "stanford-crfm/marin-tokenizer"
PUBLISHED = "soda-research/marin-mimi-bpe-8cb-16k-tokenizer"
ADDED_MARKERS = (TEXT_START, TEXT_END, AUDIO_START, AUDIO_END)  # in SPEC order: ids 128256..128259
N_AUDIO_TOKENS = NUM_CODEBOOKS * CODEBOOK_SIZE  # 16,384
FIRST_MARKER_ID = 128_256  # the Llama-3 base's vocabulary size
FIRST_AUDIO_ID = FIRST_MARKER_ID + len(ADDED_MARKERS)  # 128,260
SPEC_VOCAB_SIZE = FIRST_AUDIO_ID + N_AUDIO_TOKENS  # 144,644
PAD_TOKEN = "<|sodadata_pad_{}|>"
LLAMA3_TEXT_VOCAB = 128_000  # the Llama-3 base's own (BPE) vocabulary; its 256 special tokens follow at 128000..
BYTES_BASE = "bytes"  # `--base bytes`: byte_level_base(), built locally
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_AUDIO_RUN = re.compile(f"[{chr(AUDIO_BASE)}-{chr(AUDIO_END_CODEPOINT - 1)}]")


def audio_characters(codebooks: int = NUM_CODEBOOKS) -> list[str]:
    """The audio characters of the first ``codebooks`` codebooks in id order (codebook-major: codebook ``i``, code
    ``c`` at ``i*2048 + c``); 16,384 for all 8."""
    return [chr(AUDIO_BASE + k) for k in range(codebooks * CODEBOOK_SIZE)]


def _special(content: str) -> AddedToken:
    # normalized=False: matched on the raw string, before the base's normalizer could rewrite it (SPEC §1).
    return AddedToken(content, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)


def is_hub_id(spec: str | Path) -> bool:
    """Whether ``spec`` could name a Hub repo (``name`` or ``org/name``); ``tok/``, ``./x``, ``a/b/c`` cannot."""
    return isinstance(spec, str) and _HUB_ID.fullmatch(spec) is not None and not spec.endswith(".json")


def local_tokenizer_file(spec: str | Path) -> Path | None:
    """The ``tokenizer.json`` a local ``spec`` names (the file or its directory); None for a Hub id.

    Raises FileNotFoundError ("no such file or directory: tok/") when ``spec`` is a path that does not hold one.
    """
    path = Path(spec)
    if path.is_dir():
        if not (path / "tokenizer.json").is_file():
            raise FileNotFoundError(f"no tokenizer.json in {spec}: build one with `sodadata tokenizer build --out {spec}`")
        return path / "tokenizer.json"
    if path.is_file():
        return path
    if is_hub_id(str(spec)):
        return None
    raise FileNotFoundError(f"no such file or directory: {spec} (build a tokenizer there with "
                            f"`sodadata tokenizer build --out {spec}`)")


def load_tokenizer(spec: str | Path | Tokenizer, revision: str | None = None) -> Tokenizer:
    """A tokenizer from a ``tokenizer.json`` file, a directory holding one, or a Hub id (network)."""
    if isinstance(spec, Tokenizer):
        return spec
    file = local_tokenizer_file(spec)
    if file is not None:
        return Tokenizer.from_file(str(file))
    try:
        return Tokenizer.from_pretrained(str(spec), revision=revision or "main")
    except Exception as exc:  # the Hub client raises many kinds (offline, 404, gated, HTTP): one message for all
        raise FileNotFoundError(f"no such file or directory: {spec}, and no tokenizer {spec!r} could be read from "
                                f"the Hub ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                                "offline, build one with `sodadata tokenizer build --base bytes --out DIR`") from exc


def byte_level_base() -> Tokenizer:
    """A base built locally, without a download: the 256 bytes as tokens 0-255, then BOS 256 and EOS 257.

    Shaped like Llama-3's tokenizer (byte-level, the same pre-tokenizer split and decoder, a BOS-prepending
    post-processor) but with no merges: every byte of text is one token. Its text ids are NOT SPEC §3's (those are
    Llama-3's); :attr:`TokenizerLayout.matches_spec` is False for anything built on it. For demos, CI and offline
    work, chosen explicitly with ``--base bytes``.
    """
    from tokenizers import models

    tok = _llama3_shaped(models.BPE(vocab={c: b for b, c in enumerate(_byte_symbols())}, merges=[]))
    tok.add_special_tokens([_special(BOS), _special(EOS)])
    _prepend_bos(tok)
    return tok


def _byte_symbols() -> list[str]:
    """The byte-level alphabet in byte order: the character GPT-2/Llama-3's ByteLevel writes for bytes 0..255."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    moved = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(moved)) for b in range(256)]


def build_tokenizer(base: str | Path | Tokenizer, revision: str | None = None,
                    codebooks: int = NUM_CODEBOOKS) -> Tokenizer:
    """The base tokenizer extended with the markers and the audio characters of ``codebooks`` codebooks at SPEC
    §3's ids (see module doc).

    ``base="bytes"`` is :func:`byte_level_base` (offline; not SPEC §3's text ids, a warning says so).
    """
    if not 1 <= codebooks <= NUM_CODEBOOKS:
        raise ValueError(f"--codebooks must be an integer from 1 to {NUM_CODEBOOKS}, got {codebooks}")
    if base == BYTES_BASE:
        log.warning("base 'bytes': a byte-level base built locally (256 byte tokens + BOS/EOS); its ids are NOT "
                    "SPEC §3's (the Llama-3 base's): for trying the pipeline offline, not for data or models meant "
                    "to match SODA's")
        base = byte_level_base()
    tok = Tokenizer.from_str(load_tokenizer(base, revision).to_str())  # a copy: the caller's base stays as it was
    vocab = tok.get_vocab(with_added_tokens=True)
    for name in (BOS, EOS):
        if name not in vocab:
            raise ValueError(f"the base tokenizer has no {name} token; SODA rows begin and end with it (SPEC §2)")
    clashes = [t for t in (*ADDED_MARKERS, *audio_characters()) if t in vocab]
    if clashes:
        raise ValueError(
            f"the base tokenizer already has {len(clashes)} of the tokens to add (first: {clashes[0]!r}); "
            "is it already extended?"
        )
    next_id = max(vocab.values()) + 1
    if next_id < FIRST_MARKER_ID:
        log.info("base has %d ids; padding with %d unused special tokens so the markers start at %d",
                 next_id, FIRST_MARKER_ID - next_id, FIRST_MARKER_ID)
        tok.add_special_tokens([_special(PAD_TOKEN.format(i)) for i in range(next_id, FIRST_MARKER_ID)])
    elif next_id > FIRST_MARKER_ID:
        log.warning("base has %d ids (> %d): markers start at %d, not at SPEC §3's ids",
                    next_id, FIRST_MARKER_ID, next_id)
    first_marker = max(tok.get_vocab(with_added_tokens=True).values()) + 1
    tok.add_special_tokens([_special(m) for m in ADDED_MARKERS])
    tok.add_special_tokens([_special(c) for c in audio_characters(codebooks)])
    layout = TokenizerLayout.of(tok)
    if layout.marker_ids[TEXT_START] != first_marker:
        raise RuntimeError(f"markers landed at {layout.marker_ids}, expected to start at {first_marker}")
    check_tokenizer(tok)
    return tok


@dataclass(frozen=True)
class TokenizerLayout:
    """Where the SODA tokens sit in a built tokenizer (read from it, not assumed)."""

    bos_id: int
    eos_id: int
    marker_ids: dict[str, int]
    audio_base: int  # id of U+E000; audio character ``ch`` is ``audio_base + ord(ch) - 0xE000``
    vocab_size: int
    base_vocab_size: int  # the base model's own vocabulary (no added tokens): Llama-3 128,000, the bytes base 256
    codebooks: int = NUM_CODEBOOKS  # audio characters of codebooks 0..codebooks-1 are tokens, no others

    @property
    def audio_end(self) -> int:
        """One past the last audio code point this tokenizer has a token for."""
        return AUDIO_BASE + self.codebooks * CODEBOOK_SIZE

    @classmethod
    def of(cls, tok: Tokenizer) -> TokenizerLayout:
        def tid(t: str) -> int:
            i = tok.token_to_id(t)
            if i is None:
                raise ValueError(f"tokenizer lacks {t!r}: build it with `sodadata tokenizer build`")
            return i

        markers = {m: tid(m) for m in ADDED_MARKERS}
        audio_base = tid(chr(AUDIO_BASE))
        # the codebooks it has: a prefix (built with --codebooks N), each codebook's first character present
        codebooks = next((n for n in range(1, NUM_CODEBOOKS)
                          if tok.token_to_id(chr(AUDIO_BASE + n * CODEBOOK_SIZE)) is None), NUM_CODEBOOKS)
        n_audio = codebooks * CODEBOOK_SIZE
        ids = np.fromiter((tid(c) for c in audio_characters(codebooks)), dtype=np.int64, count=n_audio)
        bad = np.flatnonzero(ids != audio_base + np.arange(n_audio))
        if bad.size:
            k = int(bad[0])
            raise ValueError(f"audio ids are not contiguous: U+{AUDIO_BASE + k:04X} has id {int(ids[k])}, "
                             f"expected {audio_base + k}")
        stray = next((k for k in range(n_audio, N_AUDIO_TOKENS) if tok.token_to_id(chr(AUDIO_BASE + k)) is not None),
                     None)
        if stray is not None:
            raise ValueError(f"the tokenizer has audio tokens of codebooks 0-{codebooks - 1} and also U+"
                             f"{AUDIO_BASE + stray:04X} (codebook {stray // CODEBOOK_SIZE}): not a tokenizer "
                             "`sodadata tokenizer build` makes")
        return cls(bos_id=tid(BOS), eos_id=tid(EOS), marker_ids=markers, audio_base=audio_base,
                   vocab_size=tok.get_vocab_size(with_added_tokens=True),
                   base_vocab_size=tok.get_vocab_size(with_added_tokens=False), codebooks=codebooks)

    @property
    def matches_spec(self) -> bool:
        """SPEC §3's ids: BOS/EOS, markers and audio where the Llama-3 base puts them, over a base of its size, and
        all 8 codebooks (a tokenizer of fewer has the same ids for what it has, but not SPEC §3's vocabulary)."""
        return (self.bos_id, self.eos_id, self.marker_ids[TEXT_START], self.audio_base, self.base_vocab_size,
                self.codebooks) == (128_000, 128_001, FIRST_MARKER_ID, FIRST_AUDIO_ID, LLAMA3_TEXT_VOCAB,
                                    NUM_CODEBOOKS)

    def check_codebooks(self, codebooks: int, what: str) -> None:
        """Raise ``ValueError`` (one line) when rows of ``codebooks`` codebooks (``what``: a component, a row) hold
        audio tokens this tokenizer lacks."""
        if codebooks > self.codebooks:
            raise ValueError(f"{what} holds audio of {codebooks} codebooks but the tokenizer has "
                             f"{self.codebooks} (built with --codebooks {self.codebooks}): rebuild it with "
                             f"`sodadata tokenizer build --codebooks {codebooks}` or more")


def check_tokenizer(tok: Tokenizer) -> TokenizerLayout:
    """Raise if any audio character or marker is not one token that decodes back to itself."""
    layout = TokenizerLayout.of(tok)
    special = tok.get_added_tokens_decoder()
    n_audio = layout.codebooks * CODEBOOK_SIZE
    for i in (*layout.marker_ids.values(), layout.audio_base, layout.audio_base + n_audio - 1):
        if i not in special or not special[i].special or special[i].normalized:
            raise ValueError(f"token {i} must be a special added token with normalized=False")
    text = "".join(audio_characters(layout.codebooks))
    ids = np.asarray(tok.encode(text, add_special_tokens=False).ids)
    expected = layout.audio_base + np.arange(n_audio)
    if ids.shape != expected.shape or (ids != expected).any():
        raise ValueError("the audio characters do not encode to one token each at their ids")
    if tok.decode(ids.tolist(), skip_special_tokens=False) != text:
        raise ValueError("the audio characters do not decode back to themselves; the base's decoder alters them")
    for m, i in layout.marker_ids.items():
        if tok.encode(m, add_special_tokens=False).ids != [i]:
            raise ValueError(f"{m} is not a single token")
    return layout


class RowEncoder:
    """Rows -> int32 token ids, equal to ``tok.encode(row, add_special_tokens=False).ids`` but fast on audio."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.layout = TokenizerLayout.of(tokenizer)

    def encode(self, row: str) -> np.ndarray:
        return self.encode_batch([row])[0]

    def encode_batch(self, rows: Sequence[str]) -> list[np.ndarray]:
        plans, texts = [], []
        for row in rows:
            if row.isascii() or _AUDIO_RUN.search(row) is None:  # a text row: skip the per-character work
                plans.append((None, [(False, len(texts), 0)]))
                texts.append(row)
                continue
            points = np.frombuffer(row.encode("utf-32-le"), dtype=np.uint32) if row else np.zeros(0, np.uint32)
            is_audio = (points >= AUDIO_BASE) & (points < AUDIO_END_CODEPOINT)
            if self.layout.codebooks < NUM_CODEBOOKS and is_audio.any():
                # audio beyond the tokenizer's codebooks would map onto ids past its audio tokens: refuse it
                top = int(points[is_audio].max())
                if top >= self.layout.audio_end:
                    self.layout.check_codebooks((top - AUDIO_BASE) // CODEBOOK_SIZE + 1, "a row")
            edges = np.flatnonzero(np.diff(is_audio.astype(np.int8))) + 1
            bounds = [0, *edges.tolist(), len(points)]
            pieces = []  # (is_audio, start, stop) runs in order; text runs become indices into ``texts``
            for start, stop in itertools.pairwise(bounds):
                if start == stop:
                    continue
                if is_audio[start]:
                    pieces.append((True, start, stop))
                else:
                    pieces.append((False, len(texts), 0))
                    texts.append(row[start:stop])
            plans.append((points, pieces))
        encoded = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False) if texts else []
        out = []
        for points, pieces in plans:
            parts = [
                (points[a:b].astype(np.int32) + np.int32(self.layout.audio_base - AUDIO_BASE)) if audio
                else np.asarray(encoded[a].ids, dtype=np.int32)
                for audio, a, b in pieces
            ]
            out.append(np.concatenate(parts) if parts else np.zeros(0, np.int32))
        return out


class TokenCounter:
    """Text, audio and marker tokens of rows, encoded exactly as training encodes them (:class:`RowEncoder`: no
    special tokens added, audio runs mapped directly); ``sodadata stats`` and ``sodadata inspect`` count with it.

    Raises ``ValueError`` when the tokenizer is not an extended one (no markers, no audio tokens, audio ids out of
    order).
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.encoder = RowEncoder(tokenizer)
        layout = self.encoder.layout
        self.audio_ids = (layout.audio_base, layout.audio_base + layout.codebooks * CODEBOOK_SIZE)  # [lo, hi)
        self.marker_ids = np.asarray([layout.bos_id, layout.eos_id, *layout.marker_ids.values()], dtype=np.int64)

    def count(self, rows: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: (text tokens, audio tokens, marker tokens)."""
        n = len(rows)
        text, audio, marker = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
        lo, hi = self.audio_ids
        for i, ids in enumerate(self.encoder.encode_batch(rows)):
            audio[i] = int(((ids >= lo) & (ids < hi)).sum())
            marker[i] = int(np.isin(ids, self.marker_ids).sum())
            text[i] = ids.size - audio[i] - marker[i]
        return text, audio, marker


# Llama-3's pre-tokenizer split (its tokenizer.json), so a small base cuts text the way the real one does.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def train_small_base(corpus: Sequence[str], vocab_size: int = 1000) -> Tokenizer:
    """A small Llama-3-shaped base (byte-level BPE, BOS/EOS specials, BOS-prepending post-processor).

    For tests, benchmarks and offline work where the real base cannot be downloaded; the extension and row
    encoding only rely on what this shares with Llama-3's tokenizer.
    """
    from tokenizers import models, pre_tokenizers, trainers

    tok = _llama3_shaped(models.BPE())
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    _prepend_bos(tok)
    return tok


def _llama3_shaped(model) -> Tokenizer:
    """A tokenizer around ``model`` that splits and decodes text as Llama-3's does (byte-level)."""
    from tokenizers import Regex, decoders, pre_tokenizers

    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def _prepend_bos(tok: Tokenizer) -> None:
    """Llama-3's post-processor: BOS before the text (rows are encoded without it: they carry their own)."""
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                       special_tokens=[(BOS, tok.token_to_id(BOS))])


def rows_only_tokenizer(tok: Tokenizer) -> Tokenizer:
    """The same tokenizer (every id unchanged) with no post-processor: encoding never adds a BOS of its own.

    For trainers that tokenize SODA rows themselves (Levanter): the rows carry their literal BOS and EOS
    (SPEC §2), so the trainer must add neither. Saved with ``save_tokenizer(..., bos_token=False)`` the trainer
    also finds no BOS token to force in front of each row (``docs/training.md``, section 7).
    """
    out = Tokenizer.from_str(tok.to_str())
    out.post_processor = None  # the base's (Llama-3: ByteLevel offsets + TemplateProcessing "<|begin_of_text|> $A")
    probe = f"{BOS}{TEXT_START}Hello world{TEXT_END}{AUDIO_START}{chr(AUDIO_BASE)}{AUDIO_END}{EOS}"
    if out.encode(probe, add_special_tokens=True).ids != tok.encode(probe, add_special_tokens=False).ids:
        raise RuntimeError("the tokenizer still adds special tokens without its post-processor")
    return out


def save_tokenizer(tok: Tokenizer, out: Path, base: str | None = None, bos_token: bool = True) -> Path:
    """Write ``tokenizer.json`` and a minimal ``tokenizer_config.json`` (for ``transformers.AutoTokenizer``).

    ``tokenizer_config.json`` carries a ``sodadata`` section: the ids, ``base`` (what it was built from) and
    ``matches_spec`` (:attr:`TokenizerLayout.matches_spec`: False for the bytes base and any non-Llama-3 base).

    ``bos_token=False`` declares no BOS token (for :func:`rows_only_tokenizer`): trainers that prepend the
    declared BOS to every document (Levanter) then leave the rows' own BOS as the only one.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tokenizer.json"
    tok.save(str(path))
    layout = TokenizerLayout.of(tok)
    note = ("encode SODA rows with add_special_tokens=False: rows carry their own BOS/EOS" if bos_token else
            "rows only: no BOS declared and no post-processor, so a trainer adds no BOS; rows carry their own BOS/EOS")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS if bos_token else None,
        "eos_token": EOS,
        "model_max_length": 1_000_000_000,
        "clean_up_tokenization_spaces": False,  # would edit text around punctuation on decode
        "sodadata": {"base": base, "base_vocab_size": layout.base_vocab_size, "markers": layout.marker_ids,
                     "audio_base": layout.audio_base, "codebooks": layout.codebooks, "vocab_size": layout.vocab_size,
                     "matches_spec": layout.matches_spec, "note": note},
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="sodadata tokenizer", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="extend a base tokenizer with the SODA markers and audio tokens")
    b.add_argument("--base", default=DEFAULT_BASE,
                   help=f"Hub id, tokenizer.json or its directory (default {DEFAULT_BASE}, needs the Hub once), or "
                   "'bytes': a byte-level base built locally, offline, whose ids are NOT SPEC §3's (demos, CI)")
    b.add_argument("--revision", help="Hub revision of the base")
    b.add_argument("--codebooks", default=str(NUM_CODEBOOKS), metavar="N",
                   help=f"audio tokens of the first N codebooks only (1-{NUM_CODEBOOKS}, default {NUM_CODEBOOKS}: "
                   "SPEC §3); N x 2048 tokens at the same ids, for rows made with --codebooks N")
    b.add_argument("--out", required=True, type=local_path, help="output directory")
    c = sub.add_parser("check", help="verify a built tokenizer: one token per audio character, markers, ids")
    c.add_argument("tokenizer", help="tokenizer.json, its directory, or a Hub id")
    args = parser.parse_args(argv)

    setup_logging()
    try:
        if args.command == "build":
            tok = build_tokenizer(args.base, args.revision, parse_codebooks(args.codebooks))
            path = save_tokenizer(tok, args.out, base=args.base)
        else:
            tok = load_tokenizer(args.tokenizer)
            path = args.tokenizer
        layout = check_tokenizer(tok)
    except (ValueError, FileNotFoundError) as exc:
        print(f"sodadata tokenizer: {exc}", file=sys.stderr)
        return 1
    print(f"{path}: vocabulary {layout.vocab_size:,}; BOS {layout.bos_id}, EOS {layout.eos_id}; markers "
          + ", ".join(f"{m} {i}" for m, i in layout.marker_ids.items())
          + f"; audio {layout.audio_base}..{layout.audio_base + layout.codebooks * CODEBOOK_SIZE - 1}"
          + ("" if layout.codebooks == NUM_CODEBOOKS else f" ({layout.codebooks} codebooks)")
          + ("" if layout.matches_spec else f" (NOT the SPEC §3 ids: base of {layout.base_vocab_size:,} tokens)"))
    return 0
