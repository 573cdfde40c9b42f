"""Object stores against a local disk (issue 15, SPEC §6): the mixture stream's tokens/s read from a bucket, and
the write path's uploads as a share of a task's time.

The store is moto's S3 server (``moto.server.ThreadedMotoServer``) on 127.0.0.1, started here in a child process
of its own so that its request handling does not share this process's interpreter lock with the stream; it is
reached through s3fs with the environment a user sets (``AWS_ENDPOINT_URL`` ...). Loopback has no network latency
and no bandwidth limit worth the name: the figures say what the read path costs in this process (requests, s3fs,
copies), not what a cloud region's network adds.

* **The stream**: ``MixtureStream.batches`` on recipes/soda.yaml (lanes 1, one process, seq_len 4096, batches of
  16) over bench/stream.py's generated SODA-like shards, from the local disk and from the bucket (the same files),
  repetitions interleaved, min / median / max; and from the bucket with the row-group prefetch switched off, to
  show what overlapping reads with tokenizing buys.

* **The write path**: the Emilia recipe (serial runner, one process, 1 torch thread) on the same fixture tars
  (Emilia's layout, MP3 utterances of 3-30 s) written to a local folder and to the bucket, repetitions
  interleaved. Per run: the time spent writing (the records' ``timings.write``: Parquet row groups, rejects, their
  commit, which on a store is the upload under the final name) plus the record's own upload (timed around
  ``write_json_atomic``, which runs after the record's timings are taken), as a share of the tasks' time
  (``elapsed_seconds`` less the codec load, plus that record upload). Target from issue 15: under 2 % on a store. Full: full-size Mimi
  with random weights (``full-random``), about 6 minutes of audio per run; quick: ``tiny-random``, a minute.

    python bench/object_store.py           # about 9 minutes on 2 cores; writes its section of BENCHMARKS.md
    python bench/object_store.py --quick   # two minutes: smaller data, shorter measurements, prints only
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench._common import REPO, load
from bench.report import publish, table

log = logging.getLogger("bench.object_store")
BUCKET = "sodadata-bench"
# moto accepts any key unless told otherwise; these are only what s3fs signs with
ENV = {"AWS_ACCESS_KEY_ID": "benchkey", "AWS_SECRET_ACCESS_KEY": "benchsecret", "AWS_DEFAULT_REGION": "us-east-1"}


def _serve(port: int) -> None:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    while True:
        time.sleep(3600)


def start_store() -> tuple[multiprocessing.Process, str]:
    """moto's S3 server in a child process; its endpoint once it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,), daemon=True)
    proc.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("moto's server did not start within 60 s")


def upload(fs, local: Path, url_root: str) -> None:
    for p in sorted(local.rglob("*")):
        if p.is_file():
            fs.put_file(str(p), f"{url_root}/{p.relative_to(local).as_posix()}")


def stream_rates(data: Path, url: str, tok, seconds: float, reps: int) -> dict[str, list[float]]:
    """tokens/s per variant (local disk, bucket, bucket without prefetch), repetitions interleaved."""
    from bench.stream import stream_rate
    from sodadata.mix import streaming
    from sodadata.mix.mixture import MixtureConfig

    local = dataclasses.replace(MixtureConfig.load(REPO / "recipes" / "soda.yaml", root=str(data)), lanes=1)
    remote = dataclasses.replace(local, root=url)
    with_prefetch = streaming._Prefetch

    class NoPrefetch(with_prefetch):
        def start(self, read_next, key) -> None:  # every row group read in the reader's thread, as on a local disk
            return None

    variants = {"local disk": (local, with_prefetch), "S3 (moto, loopback)": (remote, with_prefetch),
                "S3, prefetch off": (remote, NoPrefetch)}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, (config, prefetch) in variants.items():
            streaming._Prefetch = prefetch
            try:
                rates[name].append(stream_rate(config, tok, seconds)[0])
            finally:
                streaming._Prefetch = with_prefetch
    return rates


def write_shares(source: Path, work: Path, url: str, codec: str, reps: int) -> tuple[dict[str, list[float]], dict]:
    """Per run, the share of the tasks' time spent writing (Parquet + rejects + record), to the local disk and to
    the bucket, repetitions interleaved; and the last run's totals."""
    from sodadata.encode.codec import CodecConfig
    from sodadata.locations import as_location
    from sodadata.recipes.emilia import EmiliaRecipe
    from sodadata.run import pipeline
    from sodadata.run.pipeline import PipelineConfig
    from sodadata.run.runner import RunnerConfig, run_recipe
    from sodadata.write.outputs import find_shards

    record_seconds: list[float] = []
    write_record = pipeline.write_json_atomic

    def timed_record(path, obj) -> None:  # the record is written after its own timings were taken
        t = time.perf_counter()
        write_record(path, obj)
        record_seconds.append(time.perf_counter() - t)

    targets = {"local disk": lambda rep: str(work / f"out-{rep}"), "S3 (moto, loopback)": lambda rep: f"{url}/out-{rep}"}
    shares: dict[str, list[float]] = {name: [] for name in targets}
    totals: dict[str, dict] = {}
    pipeline.write_json_atomic = timed_record
    try:
        for rep in range(reps):
            for name, out_of in targets.items():
                out = out_of(rep)
                record_seconds.clear()
                result = run_recipe(EmiliaRecipe(source=str(source)),
                                    PipelineConfig(out=out, codec=CodecConfig(codec=codec, threads=1)),
                                    RunnerConfig(serial=True, progress=False))
                assert result.ok, result.failures
                records = [s.record for s in find_shards(as_location(out)).shards]
                write = sum(r["timings"]["write"] for r in records) + sum(record_seconds)
                # a warm worker's task: the codec load of a run's first task is not part of the others
                task = sum(r["elapsed_seconds"] - r["timings"].get("model_load", 0.0) for r in records) \
                    + sum(record_seconds)
                shares[name].append(write / task)
                totals[name] = {"tasks": len(records), "task_s": task, "write_s": write,
                                "record_s": sum(record_seconds), "audio_s": sum(r["audio_seconds"] for r in records),
                                "bytes": sum(sum(r["files"].values()) for r in records)}
    finally:
        pipeline.write_json_atomic = write_record
    return shares, totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data, short measurements; prints only")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    scale, seconds, reps = (1, 2.0, 3) if args.quick else (2, 8.0, 5)
    # the write path: tiny-random and a minute of audio, or full-size Mimi and about 6 minutes per run
    codec, docs, utts, write_reps = ("tiny-random", 1, 2, 2) if args.quick else ("full-random", 3, 4, 3)

    proc, endpoint = start_store()
    os.environ.update(ENV, AWS_ENDPOINT_URL=endpoint)
    load_before = load()
    try:
        import s3fs
        from synthetic import WORDS

        from bench.stream import make_data
        from sodadata.mix.tokenizer import build_tokenizer, train_small_base

        fs = s3fs.S3FileSystem()
        fs.mkdir(BUCKET)
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            make_data(data, scale)
            upload(fs, data, f"{BUCKET}/soda")
            tok = build_tokenizer(train_small_base([" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 4))
            size = sum(p.stat().st_size for p in data.rglob("*.parquet"))
            rates = stream_rates(data, f"s3://{BUCKET}/soda", tok, seconds, reps)
        with tempfile.TemporaryDirectory() as tmp:
            from fixtures import make_emilia_source

            source, work = Path(tmp) / "source", Path(tmp) / "work"
            make_emilia_source(source, seed=1, quirks=False, tars_per_subset=1, docs_per_tar=docs,
                               utts_per_doc=utts, seconds=(3.0, 30.0))
            work.mkdir()
            shares, totals = write_shares(source, work, f"s3://{BUCKET}/write", codec, write_reps)
    finally:
        proc.kill()
        proc.join()
    rows = [[name, f"{min(r) / 1e6:.2f} M", f"{statistics.median(r) / 1e6:.2f} M", f"{max(r) / 1e6:.2f} M"]
            for name, r in rates.items()]
    local_median = statistics.median(rates["local disk"])
    write_rows = [[name, f"{min(r):.2%}", f"{statistics.median(r):.2%}", f"{max(r):.2%}",
                   f"{totals[name]['write_s']:.2f} s", f"{totals[name]['record_s'] * 1000:.0f} ms",
                   f"{totals[name]['task_s']:.1f} s"] for name, r in shares.items()]
    last = totals["S3 (moto, loopback)"]
    body = "\n\n".join([
        f"The mixture stream (recipes/soda.yaml at lanes 1, seq_len 4096, batches of 16, one process; "
        f"bench/stream.py's generated shards, {size / 2**20:.0f} MiB of Parquet; {seconds:g} s per measurement, "
        f"{reps} repetitions interleaved), tokens/s:",
        table(["read from", "min", "median", "max"], rows),
        f"From the bucket the stream keeps {statistics.median(rates['S3 (moto, loopback)']) / local_median:.0%} "
        "of its local-disk rate with each reader's next row group read in a background thread while the current "
        f"one is tokenized, {statistics.median(rates['S3, prefetch off']) / local_median:.0%} without. "
        f"Load average {load_before:.1f} before, {load():.1f} after (2 shared cores: figures are lower bounds). "
        "Loopback has no network latency: on a cloud store each row group is a round trip of tens of "
        "milliseconds, which the prefetch hides as long as reading a row group takes less time than tokenizing one.",
        f"The write path: the Emilia recipe with `{codec}` (1 torch thread, serial runner) on {last['tasks']} "
        f"fixture tars holding {last['audio_s'] / 60:.1f} min of audio ({last['bytes'] / 2**20:.2f} MiB of Parquet "
        f"and rejects per run), {write_reps} repetitions interleaved; share of the tasks' time spent writing "
        "(Parquet, rejects, their commit or upload, and the record; last run's seconds beside it):",
        table(["written to", "min", "median", "max", "writing (last run)", "record", "tasks' time"], write_rows),
        f"Issue 15's target is under 2 % on a store: the median here is "
        f"{statistics.median(shares['S3 (moto, loopback)']):.2%} (local disk "
        f"{statistics.median(shares['local disk']):.2%}). Loopback again: a cloud store adds a round trip of tens "
        "of milliseconds per upload (three per shard: Parquet, rejects, record) and its bandwidth for the bytes.",
    ])
    return publish("object_store", "Object stores: the mixture stream and the write path (issue 15)", body,
                   write=not (args.quick or args.no_write))


if __name__ == "__main__":
    sys.exit(main())
