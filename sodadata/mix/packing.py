"""The token-exact mixture stream: packing into windows, block-deterministic mixing, host/worker split, resume.

Interface (stable; the JAX trainer in ``train/`` and the PyTorch dataset build on it)::

    stream = MixtureStream(config, tokenizer=None | tokenizers.Tokenizer | path, process_index=0, process_count=1)
    for batch in stream.batches(global_batch_size):  # host-local NumPy, one dict per training step
        batch["input_ids"]    # int32 [global_batch_size // process_count, seq_len]
        batch["segment_ids"]  # int32, same shape: 1, 2, ... = the rows (documents) inside the window
        batch["component"]    # int32 [rows]: index into config.components
    stream.state_dict() / stream.load_state_dict(d)   # exact resume; JSON-serialisable
    stream.component_tokens, stream.epochs            # this host's tokens per component; epochs started

How the global stream is defined (independent of the number of hosts and workers):

* **Lanes.** The stream is split into ``config.lanes`` independent lanes. Each lane has its own reader per
  component (streaming.py: in epoch ``e`` lane ``l`` reads shards ``perm_e[l], perm_e[l+L], …`` of the component's
  per-epoch shuffle, or every ``m``-th row of a shared shard when there are fewer shards than lanes), so lanes
  share no data and need no coordination.
* **Packing.** Inside a lane, each component's rows are tokenized and concatenated (every row carries its own
  BOS/EOS) and cut into windows of exactly ``seq_len`` tokens. A row that does not fit continues at the start of
  that component's next window. ``segment_ids`` number the row pieces inside a window from 1, so a trainer can
  block attention across documents. There is no padding: 0 never occurs (it is reserved for padding).
* **Mixing.** A lane's windows come in blocks of ``block_size``. In every block each component has exactly
  ``block_counts()[c]`` windows (largest remainder of weight x block size); since every window holds ``seq_len``
  tokens these are the token shares. Within a block the components are spread evenly, each at a random phase drawn
  from ``(seed, lane, block)``: interleaved, never all of one component and then the next.
* **Batches.** A global batch of ``B`` windows takes ``B / lanes`` consecutive windows from each lane, lane 0's
  first (row ``r`` from lane ``r * lanes // B``; ``B`` must be at least ``lanes``). Host ``h`` of ``P`` gets rows
  ``[h*B/P, (h+1)*B/P)`` and computes only the lanes those rows come from: with ``lanes`` a multiple of ``P`` no
  two hosts read or tokenize the same data. (Otherwise a lane shared by two hosts is computed by both; the rows
  each keeps are still disjoint.) The per-lane window sequences do not depend on ``B`` either; ``B`` only groups
  them.

Deviation from a single global state: each host's ``state_dict()`` holds the positions of *its* lanes (save one
per host, as train/checkpoint.py does). ``load_state_dict`` accepts any state holding at least the lanes this host
needs, so :func:`merge_states` of all hosts' states resumes on any other number of hosts too.

PyTorch: :meth:`MixtureStream.torch_dataset` is an ``IterableDataset`` that splits the host's lanes between
DataLoader workers; :meth:`MixtureStream.torch_batches` runs it through a ``DataLoader`` and reassembles the
host batches, in order, with exact resume.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from sodadata.mix.mixture import MixtureConfig
from sodadata.mix.streaming import ComponentReader, ShardList, list_shards, stable_id, uniform
from sodadata.mix.tokenizer import RowEncoder, load_tokenizer

log = logging.getLogger(__name__)

# 2: shards identified by content (streaming.ShardList.identities), with a summary per component to name a change
STATE_VERSION = 2
_SCHEDULE_KEY = stable_id("block-schedule")


def block_schedule(counts: Sequence[int], *key: int) -> np.ndarray:
    """The component of each window of one block: ``counts[c]`` windows of component ``c``, evenly spread.

    Component ``c``'s windows sit at ``(k + u_c) / counts[c]`` for ``k < counts[c]``, with a random phase ``u_c``
    drawn from ``key``; sorting all positions interleaves the components, so any prefix of a block is within one
    window of its exact share for each component.
    """
    phases = uniform(len(counts), _SCHEDULE_KEY, *key)
    positions = np.concatenate([(np.arange(n) + phases[c]) / n for c, n in enumerate(counts)])
    components = np.concatenate([np.full(n, c, dtype=np.int32) for c, n in enumerate(counts)])
    return components[np.lexsort((components, positions))]


@dataclass
class Windows:
    input_ids: np.ndarray  # int32 [n, seq_len]
    segment_ids: np.ndarray  # int32 [n, seq_len]
    component: np.ndarray  # int32 [n]


class Lane:
    """One lane: a reader per component, packed into windows, mixed block by block."""

    def __init__(self, config: MixtureConfig, lane: int, shards: Sequence[ShardList], encoder: RowEncoder,
                 state: dict | None = None) -> None:
        self.config = config
        self.lane = lane
        self.counts = config.block_counts()
        positions = (state or {}).get("components", {})
        self.readers = [
            ComponentReader(c.name, s, encoder, config.seed, lane, config.lanes, config.text_key, positions.get(c.name))
            for c, s in zip(config.components, shards)
        ]
        self.window = int((state or {}).get("window", 0))  # windows produced so far
        self._schedule_block = -1
        self._schedule: np.ndarray | None = None

    def state(self) -> dict:
        return {"window": self.window, "components": {r.name: r.state() for r in self.readers}}

    def component_at(self, window: int) -> int:
        block, k = divmod(window, self.config.block_size)
        if block != self._schedule_block:
            self._schedule = block_schedule(self.counts, self.config.seed, self.lane, block)
            self._schedule_block = block
        return int(self._schedule[k])

    def take(self, n: int) -> Windows:
        T = self.config.seq_len
        ids = np.empty((n, T), dtype=np.int32)
        segs = np.empty((n, T), dtype=np.int32)
        comp = np.empty(n, dtype=np.int32)
        for i in range(n):
            c = self.component_at(self.window)
            at = 0
            for seg, piece in enumerate(self.readers[c].pieces(T), start=1):
                ids[i, at:at + len(piece)] = piece
                segs[i, at:at + len(piece)] = seg
                at += len(piece)
            comp[i] = c
            self.window += 1
        return Windows(ids, segs, comp)


@dataclass(frozen=True)
class Slot:
    lane: int
    per_step: int  # windows the lane gives every global batch
    lo: int  # of those, rows [lo, hi) belong to this host
    hi: int


def host_slots(lanes: int, global_batch_size: int, process_index: int, process_count: int) -> list[Slot]:
    """Host ``process_index``'s rows of a global batch as (lane, rows of that lane's windows), in row order.

    Row ``r`` of a global batch of ``B`` comes from lane ``r * lanes // B``: consecutive rows per lane, lane 0 first,
    ``B / lanes`` rows each when ``lanes`` divides ``B`` (otherwise some lanes give one window more per step).
    """
    B, P, L = global_batch_size, process_count, lanes
    if B % P:
        raise ValueError(f"global batch size {B} is not a multiple of process_count {P}")
    if B < L:
        raise ValueError(f"global batch size {B} is smaller than the recipe's lanes ({L}): some lanes, and the shards "
                         f"they read, would never be used; set lanes to at most {B}")
    first, stop = process_index * B // P, (process_index + 1) * B // P
    slots = []
    for lane in range(first * L // B, (stop - 1) * L // B + 1):
        begin, end = -(-lane * B // L), -(-(lane + 1) * B // L)  # rows r with r * L // B == lane
        slots.append(Slot(lane, end - begin, max(first, begin) - begin, min(stop, end) - begin))
    return slots


class MixtureStream:
    """The mixed, packed window stream of one host (module doc)."""

    def __init__(self, config: MixtureConfig, tokenizer: Tokenizer | str | Path | None = None,
                 process_index: int = 0, process_count: int = 1, only_lanes: Sequence[int] | None = None) -> None:
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
        self.config = config
        self.process_index = process_index
        self.process_count = process_count
        self._only_lanes = None if only_lanes is None else sorted(set(only_lanes))  # a DataLoader worker's share
        self.tokenizer = load_tokenizer(tokenizer if tokenizer is not None else config.tokenizer)
        self.encoder = RowEncoder(self.tokenizer)
        self.shards = [list_shards(config.component_location(c)) for c in config.components]
        for c, s in zip(config.components, self.shards):
            problem = s.made_by_problem()
            if problem:  # one stream, one codec: tokens of two codecs under one component would train as one
                raise ValueError(f"component {c.name} ({s.location}): {problem}; the stream takes a component made "
                                 "one way: rebuild the others (the recipe's --redo-mismatched) or leave them out")
            # rows of more codebooks than the tokenizer has would hold audio it has no tokens for (SPEC §1, §3):
            # refused here, before any step (the shards agree on made_by now); a glob's rows by RowEncoder
            made = (s.record(0) or {}).get("made_by") if s.with_records and s.paths else None
            if isinstance(made, dict) and made.get("codebooks"):
                self.encoder.layout.check_codebooks(int(made["codebooks"]), f"component {c.name}")
        short = [f"{c.name} {len(s.paths)}" for c, s in zip(config.components, self.shards) if len(s.paths) < config.lanes]
        if short:  # one line for all of them: a small output (the sample) has few shards in every component
            log.warning("fewer shards than the recipe's %d lanes (%s): lanes share a shard, each reading every row "
                        "group of it and keeping its own rows; more shards read less", config.lanes, ", ".join(short))
        self._lanes: dict[int, Lane] = {}
        self._saved_lanes: dict[int, dict] = {}  # restored lane states not yet turned into lanes
        self._restored = False
        self.component_tokens: dict[str, int] = dict.fromkeys(config.names, 0)
        self.steps = 0

    # -- layout --------------------------------------------------------------------------------------------
    def host_slots(self, global_batch_size: int) -> list[Slot]:
        """Which lanes, and which of each lane's windows per step, make this host's rows (in row order)."""
        slots = host_slots(self.config.lanes, global_batch_size, self.process_index, self.process_count)
        return [s for s in slots if self._only_lanes is None or s.lane in self._only_lanes]

    def _lane(self, index: int) -> Lane:
        if index not in self._lanes:
            if self._restored and index not in self._saved_lanes:
                raise ValueError(f"the loaded stream state has no position for lane {index}, which host "
                                 f"{self.process_index} of {self.process_count} reads: load this host's own state, "
                                 "or merge_states() of every host's state")
            self._lanes[index] = Lane(self.config, index, self.shards, self.encoder, self._saved_lanes.pop(index, None))
        return self._lanes[index]

    # -- the stream -----------------------------------------------------------------------------------------
    def batches(self, global_batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """This host's rows of every global batch, forever (components start new epochs as they run out)."""
        slots = self.host_slots(global_batch_size)
        lanes = [self._lane(s.lane) for s in slots]
        names = self.config.names
        while True:
            parts = []
            for slot, lane in zip(slots, lanes):
                w = lane.take(slot.per_step)
                parts.append((w.input_ids[slot.lo:slot.hi], w.segment_ids[slot.lo:slot.hi], w.component[slot.lo:slot.hi]))
            batch = {
                "input_ids": np.concatenate([p[0] for p in parts]),
                "segment_ids": np.concatenate([p[1] for p in parts]),
                "component": np.concatenate([p[2] for p in parts]),
            }
            for c, n in zip(*np.unique(batch["component"], return_counts=True)):
                self.component_tokens[names[c]] += int(n) * self.config.seq_len
            self.steps += 1
            yield batch

    @property
    def epochs(self) -> dict[str, int]:
        """Per component, the latest epoch any of this host's lanes has started (0: still in the first pass)."""
        out = dict.fromkeys(self.config.names, 0)
        for lane in self._lanes.values():
            for r in lane.readers:
                out[r.name] = max(out[r.name], r.epoch)
        for state in self._saved_lanes.values():
            for name, position in state["components"].items():
                out[name] = max(out[name], int(position["epoch"]))
        return out

    # -- resume ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        lanes = {str(i): copy.deepcopy(s) for i, s in self._saved_lanes.items()}
        lanes.update({str(i): lane.state() for i, lane in self._lanes.items()})
        return {
            "version": STATE_VERSION,
            "recipe": self.config.fingerprint(),
            "process_index": self.process_index,
            "process_count": self.process_count,
            "steps": self.steps,
            "component_tokens": dict(self.component_tokens),
            "shards": {c.name: s.summary() for c, s in zip(self.config.components, self.shards)},
            "lanes": lanes,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            old = " (saved before shards were identified by content)" if state.get("version") == 1 else ""
            raise ValueError(f"stream state version {state.get('version')} is not {STATE_VERSION}{old}: "
                             "it cannot be resumed exactly by this version")
        if state["recipe"] != self.config.fingerprint():
            raise ValueError("this stream state was saved for a different recipe (components, weights, seed, "
                             "seq_len, block_size or lanes changed)")
        for c, shards in zip(self.config.components, self.shards):
            change = shards.changes_since(state["shards"][c.name])
            if change:
                raise ValueError(f"cannot resume the stream exactly: in component {c.name}, {change} since this "
                                 "state was saved")
        self._lanes = {}
        self._saved_lanes = {int(i): copy.deepcopy(s) for i, s in state["lanes"].items()}
        self.steps = int(state["steps"])
        self._restored = bool(self._saved_lanes) or self.steps > 0  # a fresh stream's state starts fresh lanes
        self.component_tokens = dict.fromkeys(self.config.names, 0) | {
            k: int(v) for k, v in state["component_tokens"].items()}

    # -- PyTorch --------------------------------------------------------------------------------------------
    def torch_dataset(self, global_batch_size: int):
        """An ``IterableDataset`` of this host's batches (from the current state); with DataLoader workers each
        worker computes a contiguous share of the host's lanes and yields its rows of every step (see
        :meth:`torch_batches` to reassemble them)."""
        return _torch_dataset_class()(self.config, self.tokenizer.to_str(), self.process_index, self.process_count,
                                      global_batch_size, self.state_dict())

    def torch_batches(self, global_batch_size: int, num_workers: int = 0, **loader_kwargs) -> Iterator[dict]:
        """This host's batches as torch tensors, computed by ``num_workers`` DataLoader workers; in the same order
        and with the same contents as :meth:`batches`, and this stream's ``state_dict()`` follows them."""
        from torch.utils.data import DataLoader

        n_lanes = len(self.host_slots(global_batch_size))
        if num_workers > n_lanes:
            raise ValueError(f"this host has {n_lanes} lanes: use at most {n_lanes} DataLoader workers")
        loader = DataLoader(self.torch_dataset(global_batch_size), batch_size=None, num_workers=num_workers,
                            **loader_kwargs)
        parts_per_step = max(1, num_workers)
        import torch

        items = iter(loader)
        while True:
            parts = [next(items) for _ in range(parts_per_step)]
            steps = {int(p["step"]) for p in parts}
            if len(steps) != 1 or [int(p["worker"]) for p in parts] != list(range(parts_per_step)):
                raise RuntimeError("DataLoader workers delivered out of order")
            batch = {k: torch.cat([p[k] for p in parts]) for k in ("input_ids", "segment_ids", "component")}
            for p in parts:
                for i, s in p["lanes"].items():
                    self._saved_lanes[int(i)] = s
            self._lanes, self._restored = {}, True
            names = self.config.names
            for c, n in zip(*np.unique(batch["component"].numpy(), return_counts=True)):
                self.component_tokens[names[c]] += int(n) * self.config.seq_len
            self.steps = steps.pop()
            yield batch


def merge_states(states: Sequence[dict]) -> dict:
    """One state holding every host's lanes (each host saved its own): resumes on any number of hosts."""
    if not states:
        raise ValueError("no states to merge")
    if len({(s["version"], s["recipe"], s["steps"], json.dumps(s["shards"], sort_keys=True)) for s in states}) != 1:
        raise ValueError("the states come from different recipes, steps or shards")
    merged = copy.deepcopy(states[0])
    merged["component_tokens"] = {}
    for s in states:
        merged["lanes"].update(copy.deepcopy(s["lanes"]))
        for k, v in s["component_tokens"].items():
            merged["component_tokens"][k] = merged["component_tokens"].get(k, 0) + v
    merged["process_index"], merged["process_count"] = None, None
    return merged


_DATASET_CLASS = None


def _torch_dataset_class():
    """Defined on first use, so importing this module does not import torch (JAX trainers never need it)."""
    global _DATASET_CLASS
    if _DATASET_CLASS is None:
        from torch.utils.data import IterableDataset, get_worker_info

        class MixtureDataset(IterableDataset):
            def __init__(self, config: MixtureConfig, tokenizer_json: str, process_index: int, process_count: int,
                         global_batch_size: int, state: dict) -> None:
                self.config = config
                self.tokenizer_json = tokenizer_json
                self.process_index = process_index
                self.process_count = process_count
                self.global_batch_size = global_batch_size
                self.state = state

            def __iter__(self):
                info = get_worker_info()
                worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
                lanes = [s.lane for s in host_slots(self.config.lanes, self.global_batch_size, self.process_index,
                                                    self.process_count)]
                mine = [int(x) for x in np.array_split(np.asarray(lanes), workers)[worker]]
                stream = MixtureStream(self.config, Tokenizer.from_str(self.tokenizer_json), self.process_index,
                                       self.process_count, only_lanes=mine)
                stream.load_state_dict(self.state)
                for batch in stream.batches(self.global_batch_size):
                    yield {**batch, "step": stream.steps, "worker": worker,
                           "lanes": {str(i): stream._lanes[i].state() for i in mine}}

        MixtureDataset.__module__ = __name__
        MixtureDataset.__qualname__ = "MixtureDataset"
        _DATASET_CLASS = MixtureDataset
    return _DATASET_CLASS


def __getattr__(name: str):
    if name == "MixtureDataset":
        return _torch_dataset_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
