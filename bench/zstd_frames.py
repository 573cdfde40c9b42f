"""Reading a multi-frame ``.jsonl.zstd`` (Nemotron-CC): the recipe's reader against ``zstandard``'s own (issue 19).

A Nemotron-CC file is one or more concatenated zstd frames. The recipe needs three things of its reader: every
frame decompressed (skippable frames passed over), a bound on what one call returns whatever the compression ratio
(a 4-byte zstd block expands to 128 KiB: 32 KiB of input can be a GiB), and an error when the input ends inside a
frame (a cut download: the records after the cut are lost, so the shard must fail, not shrink). Measured on a
generated file of JSON lines (random words, ~3x compression, level 3) in several frames with a skippable frame
between two of them, each reader run on the same bytes in memory, interleaved, medians:

* ``recipe``: ``sodadata.recipes.nemotron_cc.decompressed_chunks``, what the recipe reads with;
* ``stream_reader``: ``ZstdDecompressor().stream_reader(source, read_across_frames=True).read(n)``, alone;
* ``decompressobj``: ``ZstdDecompressor().decompressobj()`` restarted at every frame end (``eof``, ``unused_data``);
* ``read_records``: the recipe's whole read (decompress, split lines, parse JSON), for scale.

Besides the speed: the largest piece one call returned, on the file and on a bomb (one frame of zeros), and what
each reader does with the file cut in the middle of its last frame.

    python bench/zstd_frames.py            # 128 MB in 8 frames, a 256 MiB bomb; writes its section of BENCHMARKS.md
    python bench/zstd_frames.py --quick    # 16 MB in 4 frames; prints only
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench._common import Interleaved
from bench.report import publish, table
from sodadata.read.recipe import ShardError
from sodadata.recipes.nemotron_cc import READ_BYTES, decompressed_chunks, read_records

CHUNK_BYTES = 128 * 1024  # what the library readers are asked for at once: one zstd block's worth
SKIPPABLE = struct.pack("<II", 0x184D2A50, 7) + b"skipped"


def jsonl(megabytes: float, seed: int) -> bytes:
    """JSON lines shaped like Nemotron-CC's: an id, a URL and a text of random words with Zipf-like frequencies."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlucmfwypvbgkqjxz"))
    vocab = ["".join(rng.choice(letters, size=int(n))) for n in rng.integers(1, 11, size=20_000)]
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    weights /= weights.sum()
    lines, size, i = [], 0, 0
    while size < megabytes * 1e6:
        words = rng.choice(len(vocab), size=int(rng.integers(50, 1500)), p=weights)
        record = {"warc_record_id": f"<urn:uuid:{seed:04d}-{i:012d}>", "url": f"https://example.org/{i}",
                  "text": " ".join(vocab[w] for w in words)}
        line = json.dumps(record).encode() + b"\n"
        lines.append(line)
        size += len(line)
        i += 1
    return b"".join(lines)


def frames(data: bytes, n: int) -> list[bytes]:
    """``data`` as ``n`` consecutive zstd frames, a skippable frame after the first (valid zstd when joined)."""
    cctx = zstandard.ZstdCompressor(level=3)
    step = -(-len(data) // n)
    parts = [cctx.compress(data[i : i + step]) for i in range(0, len(data), step)]
    return [*parts[:1], SKIPPABLE, *parts[1:]]


def by_stream_reader(blob: bytes) -> Iterator[bytes]:
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_size=READ_BYTES, read_across_frames=True)
    while chunk := reader.read(CHUNK_BYTES):
        yield chunk


def by_decompressobj(blob: bytes) -> Iterator[bytes]:
    dctx = zstandard.ZstdDecompressor()
    source = io.BytesIO(blob)
    dobj = dctx.decompressobj()
    while block := source.read(READ_BYTES):
        while block:
            if out := dobj.decompress(block):
                yield out
            block = b""
            if dobj.eof:  # the frame ended inside this block: the rest starts the next one
                block, dobj = dobj.unused_data, dctx.decompressobj()


def by_recipe(blob: bytes) -> Iterator[bytes]:
    return decompressed_chunks(io.BytesIO(blob))


READERS: dict[str, Callable[[bytes], Iterator[bytes]]] = {
    "recipe": by_recipe,
    "stream_reader": by_stream_reader,
    "decompressobj": by_decompressobj,
}


def drain(chunks: Iterator[bytes]) -> tuple[int, int]:
    """(bytes, largest chunk)."""
    total = largest = 0
    for chunk in chunks:
        total += len(chunk)
        largest = max(largest, len(chunk))
    return total, largest


def on_cut(read: Callable[[bytes], Iterator[bytes]], cut: bytes, whole: int) -> str:
    try:
        got, _ = drain(read(cut))
    except ShardError as exc:
        return f"ShardError ({str(exc).split(':')[0]})"
    return f"no error: {got / 1e6:.1f} of {whole / 1e6:.1f} MB"


def mb(n: int) -> str:
    return f"{n / 2**20:.3g} MiB" if n >= 2**20 else f"{n / 2**10:.3g} KiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="16 MB in 4 frames, a 64 MiB bomb; print only")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 5; 3 with --quick)")
    args = parser.parse_args(argv)
    megabytes, n_frames, bomb_mib = (16, 4, 64) if args.quick else (128, 8, 256)
    reps = args.reps or (3 if args.quick else 5)

    data = jsonl(megabytes, seed=19)
    parts = frames(data, n_frames)
    blob = b"".join(parts)
    cut = blob[: len(blob) - len(parts[-1]) // 2]
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(bomb_mib * 2**20))
    for name, read in READERS.items():  # every reader gives the same bytes
        assert b"".join(read(blob)) == data, name

    variants = {name: (lambda read=read: drain(read(blob))) for name, read in READERS.items()}
    variants["read_records"] = lambda: sum(1 for _ in read_records(io.BytesIO(blob), "bench"))
    runs = Interleaved().run(variants, reps)
    rows = []
    for name, read in READERS.items():
        timing = runs.timings[name]
        rows.append([
            name, f"{len(data) / timing.wall_median / 1e6:,.0f}", f"{len(data) / timing.cpu_median / 1e6:,.0f}",
            mb(runs.outputs[name][1]), mb(drain(read(bomb))[1]), on_cut(read, cut, len(data)),
        ])
    records = runs.timings["read_records"]
    recipe_cpu, bare_cpu = runs.timings["recipe"].cpu_median, runs.timings["stream_reader"].cpu_median
    records_cpu = records.cpu_median
    rows.append(["read_records", f"{len(data) / records.wall_median / 1e6:,.0f}",
                 f"{len(data) / records.cpu_median / 1e6:,.0f}", "", "", ""])
    body = f"""{len(data) / 1e6:.0f} MB of JSON lines in {n_frames} zstd frames and a skippable one ({len(blob) / 1e6:.1f} MB
compressed); decompressed MB per second (wall and CPU, medians of {reps}, {runs.load_note()}); the largest piece
one call returned on this file and on a {bomb_mib} MiB frame of zeros ({len(bomb) / 1024:.0f} KiB compressed);
the file cut in the middle of its last frame:

{table(["reader", "MB/s wall", "MB/s CPU", "largest piece", "largest piece, bomb", "cut inside a frame"], rows)}

`stream_reader(read_across_frames=True)` decompresses every frame, passes skippable frames and bounds each piece by
the size asked for; `decompressobj` returns in one piece whatever the bytes fed to it expand to (the bomb's whole
frame). Neither says a word when the input ends inside a frame: they return what they have and stop, so a cut file
would read as a shorter valid one and its lost records would go uncounted. The recipe therefore reads with
`stream_reader` and follows the frame and block headers of the compressed bytes on their way in
(`ZstdFrameEnds`: headers only, bodies skipped unread) to tell a stream that ends at a frame's end from a cut one;
that costs {100 * (recipe_cpu / bare_cpu - 1):.0f} % over `stream_reader` alone. The decompression is
{100 * recipe_cpu / records_cpu:.0f} % of the CPU time of the recipe's whole read (`read_records`: decompress, split
lines, parse JSON)."""
    return publish("zstd_frames", "Nemotron-CC: reading multi-frame zstd, the recipe's reader and zstandard's (issue 19)",
                   body, write=not args.quick)


if __name__ == "__main__":
    sys.exit(main())
