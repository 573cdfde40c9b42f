"""Validation NLL (``python -m train --eval DIR_OR_URL --eval-every K``): the same windows, scored the same way,
every time.

**The rows.** ``DIR_OR_URL`` is a sodadata output root, one component folder (or a glob of Parquet files), or a
published copy (``hf://datasets/ORG/NAME@REV``, or a download of one): :func:`eval_components` finds its
components the way ``--data`` does. Components are taken in name order, each component's shards in file-name
order (``list_shards``, so a published copy gives the same rows as its output directory), the row groups of a
shard and the rows of a row group in file order: no shuffle, no seed.

**The windows.** Rows are tokenized with the run's tokenizer (``RowEncoder``, the stream's own), concatenated in
that order (each row carries its BOS and EOS) and cut into windows of the run's ``seq_len``, as the training stream
packs a component: a row that does not fit continues at the start of the next window. ``segment_ids`` number the
row pieces of a window from 1; the last window is padded with segment 0. Reading stops after ``--eval-max-tokens``
tokens (the last row read may be cut there). The windows go through the model ``batch_size`` at a time, sharded
like the training batches; the last batch is filled with all-padding windows.

**What is counted.** Every position whose next token lies in the same row piece (``model.loss_weights``, the
training loss's own mask): padding, a window's first token and the first token of a row (its BOS, predicted from
another document) are never targets. Each target is classed by its token id:

- ``audio``: an audio token (``TokenizerLayout.audio_base`` and the 16,384 ids after it);
- ``markers``: ``<|text_start|>``, ``<|text_end|>``, ``<|audio_start|>``, ``<|audio_end|>``, ``<|begin_of_text|>``
  and ``<|end_of_text|>`` (structure, not content: counted apart so they do not dilute the text NLL);
- ``text``: everything else (the base tokenizer's text tokens).

and by the format of the row it belongs to (the shard's ``format`` column; rows of a published copy without it by
their id: ``_type1`` text_first, ``_type2`` audio_first, ``_type3`` audio_only, anything else text).

**The numbers** (mean NLL per token in nats, float64 sums of per-token float32 NLLs): ``eval_nll`` over every
target, ``eval_nll_audio`` / ``eval_nll_text`` / ``eval_nll_markers`` by class, ``eval_nll_<format>`` by format
(``text_first``, ``audio_first``, ``audio_only``, and ``text_only`` for the ``text`` format, whose own name is the
text class's; only formats present), and ``eval_nll_<format>_<class>`` for each pair present (``eval_nll_audio_first_text`` is the transcript given the speech before it, ASR-like;
``eval_nll_text_first_audio`` the speech given its transcript, TTS-like). ``eval_tokens`` holds the counts under
the same names. docs/training.md ("Evaluation") says which of them the SODA paper's validation NLL is.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import fsspec
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from sodadata.mix.streaming import ShardList, list_shards
from sodadata.mix.tokenizer import N_AUDIO_TOKENS, RowEncoder
from sodadata.write.document import AUDIO_FIRST, AUDIO_ONLY, TEXT_FIRST, TEXT_ONLY
from sodadata.write.outputs import find_shards
from sodadata.write.published import DATA_DIR, bucket, published_location
from train import model as M
from train.config import ModelConfig, TrainConfig
from train.sharding import BATCH_AXES, P, batch_sharding, global_batch, replicated

log = logging.getLogger(__name__)

FORMATS = (TEXT_FIRST, AUDIO_FIRST, AUDIO_ONLY, TEXT_ONLY)  # the order of the metrics
# Each format's name in the metrics: the text format's own name ("text") would clash with the text-token class.
METRIC_NAMES = {TEXT_FIRST: "text_first", AUDIO_FIRST: "audio_first", AUDIO_ONLY: "audio_only", TEXT_ONLY: "text_only"}
CLASSES = ("text", "audio", "markers")
TEXT, AUDIO, MARKERS = range(len(CLASSES))
# Rows of a published copy without a format column (SODA's own datasets: id, split, text) carry it in the id.
ID_SUFFIX_FORMATS = {"_type1": TEXT_FIRST, "_type2": AUDIO_FIRST, "_type3": AUDIO_ONLY}
ENCODE_ROWS = 256  # rows handed to the tokenizer per call


def eval_components(location: str) -> list[tuple[str, ShardList]]:
    """The components at ``location`` with their shards, in name order (module doc)."""
    try:  # a component folder (finished shards directly inside) or a glob of Parquet files
        return [(location, list_shards(location))]
    except FileNotFoundError:
        pass
    fs, base = fsspec.core.url_to_fs(location)
    base = base.rstrip("/")
    names: list[str] = []
    if fs.isdir(f"{base}/{DATA_DIR}"):  # a published copy: data/<component>/[<bucket>/]<stem>.parquet
        for path in fs.glob(f"{base}/{DATA_DIR}/**/*.parquet"):
            folder, file = path[len(base) + len(DATA_DIR) + 2:].rsplit("/", 1)
            head, _, last = folder.rpartition("/")
            name = head if head and last == bucket(file[: -len(".parquet")]) else folder
            if name not in names and published_location(location, name) is not None:
                names.append(name)
        if names:
            return [(n, list_shards(published_location(location, n))) for n in sorted(names)]
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        found = find_shards(Path(base))
        if len(found.roots) > 1:
            raise ValueError(f"--eval {location} holds {len(found.roots)} output roots "
                             f"({', '.join(map(str, found.roots))}): give one of them")
        names = sorted({s.component for s in found.shards})
        roots = found.roots
        if names:
            return [(n, list_shards(str(roots[0] / n))) for n in names]
    else:  # an output root at a URL: <component>/<stem>.parquet with <stem>.json beside it
        files = set(fs.find(base))
        names = sorted({p[len(base) + 1:].rsplit("/", 1)[0] for p in files if p.endswith(".parquet")
                        and p[: -len(".parquet")] + ".json" in files and "/" in p[len(base) + 1:]
                        and not any(part.startswith(("_", ".")) or part == "rejects"
                                    for part in p[len(base) + 1:].split("/"))})
        if names:
            return [(n, list_shards(location.rstrip("/") + "/" + n)) for n in names]
    raise FileNotFoundError(f"--eval {location}: no finished shards there (an output root, a component folder, a "
                            "glob of Parquet files or a published copy)")


def token_classes(ids: np.ndarray, encoder: RowEncoder) -> np.ndarray:
    """The class (``CLASSES`` index) of each token id (module doc)."""
    layout = encoder.layout
    markers = np.array([layout.bos_id, layout.eos_id, *layout.marker_ids.values()])
    out = np.full(ids.shape, TEXT, dtype=np.int32)
    out[(ids >= layout.audio_base) & (ids < layout.audio_base + N_AUDIO_TOKENS)] = AUDIO
    out[np.isin(ids, markers)] = MARKERS
    return out


def row_format(fmt: str | None, row_id: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"row {row_id!r} has format {fmt!r}; known: {', '.join(FORMATS)}")
        return fmt
    for suffix, name in ID_SUFFIX_FORMATS.items():
        if (row_id or "").endswith(suffix):
            return name
    return TEXT_ONLY


@dataclass
class EvalSet:
    """The evaluation windows (every host holds all of them) and what they were made from."""

    input_ids: np.ndarray  # int32 [windows, seq_len]
    segment_ids: np.ndarray  # int32 [windows, seq_len]; 0 = padding
    category: np.ndarray  # int32 [windows, seq_len]: format index * len(CLASSES) + class of the token there
    rows: int  # rows read (the last one possibly cut)
    tokens: int  # real tokens in the windows
    components: list[str]

    @property
    def sha1(self) -> str:
        """Digest of the windows: equal digests, the same evaluation data."""
        h = hashlib.sha1()
        for a in (self.input_ids, self.segment_ids, self.category):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


def load_eval_set(location: str, encoder: RowEncoder, seq_len: int, max_tokens: int,
                  text_key: str = "text") -> EvalSet:
    """Read, tokenize and pack the evaluation rows (module doc)."""
    if max_tokens < 2:
        raise ValueError("--eval-max-tokens must be at least 2")
    components = eval_components(location)
    for name, shards in components:
        problem = shards.made_by_problem()
        if problem:  # as the stream refuses it: tokens of two codecs would be scored as one component
            raise ValueError(f"--eval component {name} ({shards.location}): {problem}")
    pieces: list[np.ndarray] = []
    formats: list[int] = []
    total = 0
    for _, shards in components:
        for i in range(len(shards.paths)):
            pf = shards.open(i)
            columns = [text_key] + [c for c in ("format", "id") if c in pf.schema_arrow.names]
            for g in range(pf.num_row_groups):
                table = pf.read_row_group(g, columns=columns)
                texts = table.column(text_key).to_pylist()
                fmts = table.column("format").to_pylist() if "format" in columns else [None] * len(texts)
                ids = table.column("id").to_pylist() if "id" in columns else [None] * len(texts)
                for start in range(0, len(texts), ENCODE_ROWS):
                    for tokens, fmt, rid in zip(encoder.encode_batch(texts[start:start + ENCODE_ROWS]),
                                                fmts[start:start + ENCODE_ROWS], ids[start:start + ENCODE_ROWS]):
                        if not len(tokens):
                            continue
                        tokens = tokens[: max_tokens - total]
                        pieces.append(tokens)
                        formats.append(FORMATS.index(row_format(fmt, rid)))
                        total += len(tokens)
                        if total >= max_tokens:
                            return _pack(pieces, formats, encoder, seq_len, [n for n, _ in components])
    if not pieces:
        raise ValueError(f"--eval {location}: its shards hold no rows")
    return _pack(pieces, formats, encoder, seq_len, [n for n, _ in components])


def _pack(pieces: list[np.ndarray], formats: list[int], encoder: RowEncoder, seq_len: int,
          components: list[str]) -> EvalSet:
    lengths = np.array([len(p) for p in pieces])
    flat = np.concatenate(pieces).astype(np.int32)
    n = len(flat)
    windows = -(-n // seq_len)
    row = np.repeat(np.arange(len(pieces), dtype=np.int64), lengths)
    category = (np.repeat(np.asarray(formats, dtype=np.int32), lengths) * len(CLASSES)
                + token_classes(flat, encoder))
    pad = windows * seq_len - n
    ids = np.concatenate([flat, np.zeros(pad, np.int32)]).reshape(windows, seq_len)
    category = np.concatenate([category, np.zeros(pad, np.int32)]).reshape(windows, seq_len).astype(np.int32)
    row = np.concatenate([row, np.full(pad, -1)]).reshape(windows, seq_len)
    # Row pieces numbered from 1 inside each window (the first row there is 1), padding 0.
    seg = np.where(row >= 0, row - row[:, :1] + 1, 0).astype(np.int32)
    return EvalSet(ids, seg, category, rows=len(pieces), tokens=n, components=components)


def metrics_from_sums(sums: np.ndarray, counts: np.ndarray) -> dict:
    """The reported numbers (module doc) from per-category NLL sums and token counts ([formats x classes])."""
    sums = sums.reshape(len(FORMATS), len(CLASSES))
    counts = counts.reshape(len(FORMATS), len(CLASSES))
    out: dict = {}
    tokens: dict[str, int] = {}

    def put(name: str, s: float, c: float) -> None:
        if c > 0:
            out[name] = float(s / c)
            tokens[name.removeprefix("eval_nll_") if name != "eval_nll" else "all"] = int(c)  # exact: sums of 0/1 weights

    put("eval_nll", sums.sum(), counts.sum())
    for k, cls in enumerate(CLASSES):
        put(f"eval_nll_{cls}", sums[:, k].sum(), counts[:, k].sum())
    for f, fmt in enumerate(FORMATS):
        put(f"eval_nll_{METRIC_NAMES[fmt]}", sums[f].sum(), counts[f].sum())
        for k, cls in enumerate(CLASSES):
            put(f"eval_nll_{METRIC_NAMES[fmt]}_{cls}", sums[f, k], counts[f, k])
    out["eval_tokens"] = tokens
    return out


class Evaluator:
    """The evaluation windows and the jitted, sharded scoring step; :meth:`run` evaluates one set of parameters."""

    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig, mesh: Mesh, param_shardings, encoder: RowEncoder,
                 seq_len: int) -> None:
        self.data = load_eval_set(cfg.eval_path, encoder, seq_len, cfg.eval_max_tokens)
        self.batch_size = cfg.batch_size
        self.mesh = mesh
        windows = len(self.data.input_ids)
        self.steps = -(-windows // self.batch_size)
        log.info("eval: %s (%s): %d rows, %s tokens in %d windows of %d (%d batches of %d); windows sha1 %s",
                 cfg.eval_path, ", ".join(self.data.components), self.data.rows, f"{self.data.tokens:,}", windows,
                 seq_len, self.steps, self.batch_size, self.data.sha1)
        self._step = build_eval_step(model_cfg, cfg, mesh, param_shardings)

    def batches(self):
        """This host's rows of each evaluation batch, as global arrays (all-padding windows fill the last)."""
        d = self.data
        total = self.steps * self.batch_size
        fill = total - len(d.input_ids)
        arrays = {k: np.concatenate([a, np.zeros((fill, a.shape[1]), np.int32)])
                  for k, a in (("input_ids", d.input_ids), ("segment_ids", d.segment_ids), ("category", d.category))}
        local = self.batch_size // jax.process_count()
        first = jax.process_index() * local
        for s in range(self.steps):
            rows = slice(s * self.batch_size + first, s * self.batch_size + first + local)
            yield global_batch({k: a[rows] for k, a in arrays.items()}, self.mesh, self.batch_size)

    def run(self, params) -> dict:
        """The metrics (module doc) for ``params``; sums over batches in float64, in batch order."""
        sums = np.zeros(len(FORMATS) * len(CLASSES), np.float64)
        counts = np.zeros_like(sums)
        for batch in self.batches():
            s, c = jax.device_get(self._step(params, batch))
            sums += np.asarray(s, np.float64)
            counts += np.asarray(c, np.float64)
        return {**metrics_from_sums(sums, counts), "eval_windows": len(self.data.input_ids),
                "eval_windows_sha1": self.data.sha1}


def build_eval_step(model_cfg: ModelConfig, cfg: TrainConfig, mesh: Mesh, param_shardings) -> Callable:
    """``step(params, batch) -> (nll sums, token counts)`` per category, jitted once with the training step's
    shardings (parameters as the train state holds them, the batch split over every device)."""
    dtype = jnp.dtype(cfg.compute_dtype)
    act = NamedSharding(mesh, P(BATCH_AXES, None, None))
    chunk = M.loss_chunk_positions(cfg.loss_chunk_tokens, cfg.batch_size // mesh.devices.size)
    n = len(FORMATS) * len(CLASSES)

    def step(params, batch):
        ids, seg, cat = batch["input_ids"], batch["segment_ids"], batch["category"]
        h = M.hidden_states(params, ids, seg, model_cfg, dtype=dtype,
                            constrain=lambda x: jax.lax.with_sharding_constraint(x, act))
        return M.chunked_nll_by_class(h[:, :-1], M.output_matrix(params), ids[:, 1:], M.loss_weights(seg),
                                      cat[:, 1:], n, chunk)

    shardings = {k: batch_sharding(mesh, 2) for k in ("input_ids", "segment_ids", "category")}
    return jax.jit(step, in_shardings=(param_shardings, shardings), out_shardings=replicated(mesh))
