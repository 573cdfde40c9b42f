"""The command line every recipe shares: ``python -m sodadata.recipes.<corpus> [options]``.

A recipe module adds its own options (``--lang``, ``--subset``, ``--source`` ...) through
``Recipe.add_arguments``; everything about codec, runner and output is here, identical for every corpus.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sodadata.encode.codec import DEFAULT_CODEC, DTYPES, NOT_REAL_WARNING, CodecConfig, check_codec
from sodadata.encode.codes import NUM_CODEBOOKS, parse_codebooks
from sodadata.read.recipe import Recipe
from sodadata.read.sources import redact_secrets
from sodadata.run.pipeline import PipelineConfig
from sodadata.run.runner import RunnerConfig, check_run_options, failure_line, format_summary, run_recipe
from sodadata.write.document import DEFAULT_FORMATS, SPEECH_FORMATS, parse_formats

log = logging.getLogger("sodadata")


INTERRUPTED = "interrupted: finished shards are kept; rerun the same command to resume"


def build_parser(recipe_cls: type[Recipe], prog: str, description: str) -> argparse.ArgumentParser:
    from sodadata.cli import OneLineParser

    parser = OneLineParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="output directory: a local path (shared by the workers) or an object-store URL (s3://, gs://, az://)")
    parser.add_argument("--limit-shards", type=int, default=None, metavar="N", help="process only the first N source shards")
    parser.add_argument(
        "--allow-missing", action="store_true",
        help="run even if the source lacks what was asked or what the catalog lists (a subset, shards): what is "
        "missing is recorded in the run summary (default: stop before any work, naming it)",
    )
    recipe_cls.add_arguments(parser)

    run = parser.add_argument_group("running")
    run.add_argument(
        "--workers", type=int, default=None,
        help="LocalCluster worker processes (default: one per usable core on CPU, one per GPU on CUDA, at most one "
        "per shard to do)",
    )
    run.add_argument("--threads-per-worker", type=int, default=None, help="tasks run at once per worker (default 1)")
    run.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT", help="use a running Dask scheduler instead of a LocalCluster")
    run.add_argument("--retries", type=int, default=2, help="retries of a failed shard before it is reported (default 2)")
    run.add_argument("--serial", action="store_true", help="run shards one by one in this process, without Dask (debugging)")
    run.add_argument("--memory-limit", default="auto", help="LocalCluster memory limit per worker (default auto)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--redo-mismatched", action="store_true",
        help="rebuild finished shards of --out whose record says they were made otherwise (another codec, dtype, "
        "text rule ...; or before made_by existed), each replaced atomically. Without it such a run stops at once.",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    if recipe_cls.kind == "speech":
        codec = parser.add_argument_group("codec")
        codec.add_argument(
            "--codec", default=DEFAULT_CODEC,
            help=f"Mimi: a Hub id (default {DEFAULT_CODEC}), a local save_pretrained directory, or tiny-random / "
            "full-random (seeded random models for tests and benchmarks: NOT real Mimi codes)",
        )
        codec.add_argument("--codec-revision", default=None, help="Hub revision of --codec")
        codec.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
        codec.add_argument("--dtype", default="float32", choices=DTYPES, help="model dtype (default float32; tf32 = float32 with TF32 matmuls on GPU)")
        codec.add_argument("--batch-size", type=int, default=None, help="utterances per encoder batch (default: 1 on CPU, 64 on GPU)")
        codec.add_argument("--max-batch-seconds", type=float, default=None, help="padded audio seconds per batch (default: 120 CPU, 1920 GPU)")
        codec.add_argument(
            "--torch-threads", type=int, default=None,
            help="torch threads per task (default: cores / (workers x threads per worker); with --scheduler, the "
            "workers' own)",
        )
        codec.add_argument("--max-utterance-seconds", type=float, default=600.0, help="reject longer utterances (default 600)")
        rows = parser.add_argument_group("rows (SPEC §1-2; recorded in each shard's made_by)")
        # read as strings and checked in main(): a bad value is one line, not argparse's usage block
        rows.add_argument(
            "--codebooks", default=str(NUM_CODEBOOKS), metavar="N",
            help=f"Mimi codebooks kept, the first N (1-{NUM_CODEBOOKS}; default {NUM_CODEBOOKS}, SODA's; 1 = the "
            "semantic codebook only): N characters per 80 ms frame, 12.5 N audio tokens per second",
        )
        rows.add_argument(
            "--formats", default=",".join(DEFAULT_FORMATS), metavar="LIST",
            help=f"rows per document, a comma list of {', '.join(SPEECH_FORMATS)} (default "
            f"{','.join(DEFAULT_FORMATS)}; audio_only: the audio spans alone, the paper's S / S+A ablations)",
        )
    return parser


def main(recipe_cls: type[Recipe], argv: list[str] | None, prog: str, description: str) -> int:
    parser = build_parser(recipe_cls, prog, description)
    args = parser.parse_args(argv)
    from sodadata.cli import setup_logging

    setup_logging(args.verbose)
    try:
        # Every option is checked here, in this process, before a cluster starts or a task runs: a mistake is one
        # line, once (exit 2), not a failure of every task and retry.
        codebooks, formats = NUM_CODEBOOKS, DEFAULT_FORMATS
        if recipe_cls.kind == "speech":
            codebooks, formats = parse_codebooks(args.codebooks), parse_formats(args.formats)
        runner = RunnerConfig(
            workers=args.workers, threads_per_worker=args.threads_per_worker, scheduler=args.scheduler,
            retries=args.retries, serial=args.serial, memory_limit=args.memory_limit, progress=not args.no_progress,
            redo_mismatched=args.redo_mismatched,
        )
        recipe = recipe_cls.from_args(args)
        codec = None
        if recipe_cls.kind == "speech":
            # threads None: the runner chooses them with the workers, once it knows the shards to do (worker_layout)
            codec = CodecConfig(
                codec=args.codec, revision=args.codec_revision, device=args.device, dtype=args.dtype,
                batch_size=args.batch_size, max_batch_seconds=args.max_batch_seconds, threads=args.torch_threads,
                num_codebooks=codebooks,
            )
        pipeline = PipelineConfig(
            out=args.out, codec=codec,
            max_utterance_seconds=getattr(args, "max_utterance_seconds", 600.0), formats=formats,
        )
        check_run_options(pipeline, args.limit_shards)
        if codec is not None:
            check_codec(codec)
            if codec.is_random:  # the run's one warning about it (workers log their load at INFO)
                banner = NOT_REAL_WARNING.format(name=codec.codec)
                print(f"\n*** WARNING: {banner} ***\n", file=sys.stderr)
        result = run_recipe(recipe, pipeline, runner, limit_shards=args.limit_shards, allow_missing=args.allow_missing)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except (RuntimeError, ValueError, OSError) as exc:  # OSError: a full or read-only disk, a missing source
        log.debug("fatal", exc_info=True)
        print(f"error: {redact_secrets(str(exc))}", file=sys.stderr)
        return 2
    print(format_summary(result))
    if not result.ok:
        print(failure_line(result), file=sys.stderr)
        return 1
    return 0
