"""Run a recipe's tasks with Dask: one task per source shard, finished shards skipped, retries, progress, summary.

A LocalCluster by default, laid out for the machine and the shards to do (``sodadata.run.worker_layout``: on CPU one
worker per core with one torch thread; ``--workers``, ``--threads-per-worker`` override); any running cluster with
``--scheduler tcp://host:port``. Each worker process loads the codec once (``sodadata.encode.codec.get_encoder``).
A killed run resumes where it stopped: a shard counts as finished once its JSON record exists and names the files
beside it as they are (``sodadata.write.shards``). ``--out`` may be a local path or an object-store URL (SPEC §6): tasks
get only that string, and each worker reaches the store with the credentials of its own environment. A finished shard
made otherwise (another codec, dtype, text rule ...: its record's ``made_by``) stops the run before any work, unless
``redo_mismatched`` asks for such shards to be rebuilt.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.util
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from sodadata.locations import Location, as_location, check_location, display, is_remote, write_json_atomic
from sodadata.read import completeness
from sodadata.read.recipe import Completeness, ConfigError, Recipe, ShardError, ShardTask
from sodadata.read.sources import redact_secrets
from sodadata.run.pipeline import PipelineConfig, run_task
from sodadata.run.worker_layout import Layout, choose_layout
from sodadata.write import made_by
from sodadata.write.shards import ShardPaths

log = logging.getLogger(__name__)
WORKER_SATURATION = 1.0
# The Dask settings a cluster for sodadata wants, and what each is for.
# - worker saturation 1.0: a worker takes a new shard only when it has none left. Shards run for minutes to hours
#   and the pipeline prefetches inside a task, so a second shard queued on a busy worker gains nothing and cannot
#   go to a worker that frees up first.
# - no statistical profiler in workers: it samples every thread's stack 100 times a second on the worker's event
#   loop, under the GIL. With one worker per core nothing idles to absorb that, and it cost 2 workers on 2 cores
#   3-7 % of their throughput (bench/pipeline.py, bench/scaling.py); it only feeds the dashboard's profile page.
CLUSTER_CONFIG = {
    "distributed.scheduler.worker-saturation": WORKER_SATURATION,
    "distributed.worker.profile.enabled": False,
}


@dataclass(frozen=True)
class RunnerConfig:
    workers: int | None = None  # None: sodadata.run.worker_layout chooses (one per core on CPU, per GPU on CUDA)
    threads_per_worker: int | None = None  # tasks at once per worker; None: 1
    scheduler: str | None = None  # tcp://host:port of a running dask scheduler
    retries: int = 2
    serial: bool = False  # run in this process without Dask (debugging, profiling)
    memory_limit: str = "auto"
    progress: bool = True
    redo_mismatched: bool = False  # rebuild finished shards whose made_by differs from this run's (else: refuse)

    def __post_init__(self) -> None:
        # Checked when the CLI builds the config, before a cluster starts: `--workers 0` used to start a cluster
        # without workers and wait for it forever.
        for option, value, least in (("--workers", self.workers, 1), ("--threads-per-worker", self.threads_per_worker, 1),
                                     ("--retries", self.retries, 0)):
            if value is not None and value < least:
                raise ValueError(f"{option} must be at least {least}, got {value}")
        _check_memory_limit(self.memory_limit)


def _check_memory_limit(limit: str) -> None:
    """What Dask's LocalCluster accepts (auto, a number: bytes or a fraction of memory, or a size such as 4GB),
    checked before the source is listed and the cluster started."""
    if limit == "auto":
        return
    try:
        float(limit)
        return
    except (TypeError, ValueError):
        pass
    from dask.utils import parse_bytes

    try:
        parse_bytes(limit)
    except ValueError:
        raise ValueError(f"--memory-limit {limit!r}: expected auto, a size such as 4GB, or a fraction of the "
                         "machine's memory such as 0.5") from None


@dataclass
class TaskFailure:
    task: str
    error: str
    traceback: str = ""


@dataclass
class RunResult:
    tasks: int
    skipped: int
    done: int
    failures: list[TaskFailure] = field(default_factory=list)
    redone: int = 0  # of `done`: shards that existed, made otherwise, and were rebuilt (--redo-mismatched)
    layout: Layout | None = None  # what ran the shards (None: nothing to do)
    cluster_start_seconds: float | None = None  # starting the LocalCluster (None: none started)
    startup: dict = field(default_factory=dict)  # start-up costs of the shards done now (startup_seconds)
    records: dict[str, dict] = field(default_factory=dict)  # task name -> record (finished before or now)
    elapsed_seconds: float = 0.0
    # what the source lacks (run anyway with --allow-missing), and what it was compared with
    completeness: Completeness = field(default_factory=Completeness)

    @property
    def ok(self) -> bool:
        return not self.failures


def execute_task(recipe: Recipe, task: ShardTask, config: PipelineConfig, redo: bool = False) -> dict:
    """What a worker runs. Skips a shard finished meanwhile by this run's settings (e.g. by a task that outlived a
    lost worker). ``redo``: the driver found this shard made otherwise and was told to rebuild it."""
    paths = ShardPaths(config.out, task.component, task.stem)
    record = paths.finished_record()
    if record is not None:
        if record.get("made_by") == config.made_by:
            return record
        if not redo:  # written meanwhile by another run with other settings: never add to it
            raise ShardError(f"{task.name} was finished meanwhile by another run, "
                             f"{made_by.describe(record.get('made_by'), config.made_by)}")
    try:
        return run_task(recipe, task, config)
    except Exception as exc:
        # An error quoting a server's answer can carry the Hub token (a proxy echoing the Authorization header).
        # Dask logs a failed task's exception on the worker, and the runner writes it to logs and the run
        # summary: replace such an exception by a redacted copy, without the original chained to it.
        message = str(exc)
        clean = redact_secrets(message)
        if clean != message:
            raise ShardError(f"{type(exc).__name__}: {clean}") from None
        raise


@dataclass(frozen=True)
class _ConfigFault:
    """What a Dask task returns instead of raising a :class:`ConfigError`. Raised, Dask would retry it (a task's
    retries count any exception) and every worker would log it; returned, it stops the run the first time."""

    message: str


def _dask_task(recipe: Recipe, task: ShardTask, config: PipelineConfig, redo: bool) -> dict | _ConfigFault:
    try:
        return execute_task(recipe, task, config, redo)
    except ConfigError as exc:
        return _ConfigFault(redact_secrets(str(exc)))


def largest_first(tasks: list[ShardTask]) -> list[ShardTask]:
    """Tasks by decreasing input bytes (unknown sizes last, recipe order among equals).

    Shards differ in size (Emilia tars, Yodas2 videos per shard, MLS groups): handing out the largest first keeps a
    run from ending on one worker still busy with a big shard while the others idle (longest-processing-time-first
    scheduling). It matters most where the tail matters most: hundreds of workers with a few shards each.
    """

    def size(task: ShardTask) -> int:
        sizes = [f.size for f in task.inputs]
        return -1 if any(s is None for s in sizes) else sum(sizes)

    return sorted(tasks, key=size, reverse=True)


def run_recipe(recipe: Recipe, pipeline: PipelineConfig, runner: RunnerConfig, limit_shards: int | None = None,
               allow_missing: bool = False) -> RunResult:
    """Run every task not finished yet. Before any work: what the source lacks stops the run
    (``completeness.IncompleteSource``) unless ``allow_missing``, which records it in the summary instead."""
    t0 = time.perf_counter()
    check_run_options(pipeline, limit_shards)
    # Once, here on the driver and before any work (listing included): the codec's identity (a Hub revision resolved
    # to a commit, a local model's weights hashed) and the rest of made_by, which every task then records unchanged.
    pipeline = made_by.prepare(recipe, pipeline)
    out = as_location(pipeline.out)
    tasks = recipe.tasks()
    report = recipe.completeness(tasks, full=limit_shards is None)
    completeness.check(report, allow_missing)
    if limit_shards is not None:
        tasks = tasks[:limit_shards]
    if not tasks:
        raise RuntimeError(f"recipe {recipe.name} found no source shards: check --source and the subset options")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        dup = [n for n, c in Counter(names).items() if c > 1][:3]
        raise RuntimeError(f"two tasks would write the same shard: {dup}")
    result = RunResult(tasks=len(tasks), skipped=0, done=0, completeness=report)
    pending = []
    redo: set[str] = set()
    mismatched: dict[str, list[dict | None]] = defaultdict(list)
    for task in tasks:
        record = ShardPaths(out, task.component, task.stem).finished_record()
        if record is None:
            pending.append(task)
            continue
        if record.get("made_by") == pipeline.made_by:
            result.records[task.name] = record
            result.skipped += 1
        else:
            mismatched[task.component].append(record.get("made_by"))
            redo.add(task.name)
            pending.append(task)
    if redo and not runner.redo_mismatched:
        raise made_by.MadeByMismatch(made_by.mismatch_line(mismatched, pipeline.made_by))
    log.info("%d shards: %d already finished (skipped), %d to do%s", len(tasks), result.skipped, len(pending),
             f" ({len(redo)} of them made otherwise: rebuilt)" if redo else "")
    pending = largest_first(pending)
    if pending:
        if not is_remote(out):  # a store was probed by check_run_options
            check_writable(out)
        layout = result.layout = run_layout(runner, pipeline, len(pending))
        if layout.torch_threads is not None and pipeline.codec is not None:
            pipeline = replace(pipeline, codec=replace(pipeline.codec, threads=layout.torch_threads))
        if not layout.external:
            runner = replace(runner, workers=layout.workers, threads_per_worker=layout.threads_per_worker)
        if runner.serial:
            _run_serial(recipe, pending, pipeline, runner, result, redo)
        else:
            _run_dask(recipe, pending, pipeline, runner, result, redo)
        result.startup = startup_seconds(result, [t.name for t in pending])
        log.info("start-up: %s", describe_startup(result.startup))
    result.elapsed_seconds = time.perf_counter() - t0
    _write_run_summary(out, recipe, pipeline, runner, result)
    return result


def run_layout(runner: RunnerConfig, pipeline: PipelineConfig, shards: int) -> Layout:
    """The layout for ``shards`` shards to do: what the user set (``runner``, ``pipeline.codec.threads``), the rest
    chosen for this machine (:func:`sodadata.run.worker_layout.choose_layout`)."""
    codec = pipeline.codec
    return choose_layout(shards, device=codec.device if codec else "", workers=runner.workers,
                         threads_per_worker=runner.threads_per_worker, torch_threads=codec.threads if codec else None,
                         serial=runner.serial, external=bool(runner.scheduler) and not runner.serial)


def check_run_options(pipeline: PipelineConfig, limit_shards: int | None) -> None:
    """What :func:`run_recipe` checks before listing a source; the CLI calls it earlier still, before its banner.

    ``--out`` must be a directory (or not exist yet): say so when it, or a folder above it, is a file. A URL
    (SPEC §6) must have its backend installed and its store must accept a probe write
    (:func:`sodadata.locations.check_location`).
    """
    if limit_shards is not None and limit_shards < 1:
        raise ValueError(f"--limit-shards must be at least 1, got {limit_shards}")
    out = as_location(pipeline.out)
    if is_remote(out):
        check_location(pipeline.out, write=True)
        return
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                where = "is a file" if path == out else f"is inside {path}, which is a file"
                raise ValueError(f"--out {out} {where}: --out names a directory (it is created if missing)")
            return


def check_writable(out: Path) -> None:
    """Fail at once, with one line, if ``out`` cannot be written (read-only mount, permissions).

    Otherwise every task would start, read its source, encode it, and only then fail on its first write.
    (A full disk passes this probe, which writes nothing; its tasks fail with ENOSPC and are reported.)
    """
    probe = out / f".sodadata-write-probe-{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise RuntimeError(
            f"cannot write to the output directory {out}: {exc.strerror or exc}. Make it writable (or choose "
            "another --out) and rerun: finished shards are kept."
        ) from None


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="shard", desc="shards", disable=not enabled or total == 0, file=sys.stderr)


def _on_done(result: RunResult, bar, task: ShardTask, record: dict, hours: list[float], redo: set[str]) -> None:
    result.records[task.name] = record
    result.done += 1
    result.redone += task.name in redo
    hours[0] += record.get("audio_seconds", 0.0) / 3600
    bar.set_postfix_str(f"{hours[0]:.2f} h audio")
    bar.update(1)


def _on_failed(result: RunResult, bar, task: ShardTask, exc: BaseException, tb: str) -> None:
    msg = redact_secrets(f"{type(exc).__name__}: {exc}").splitlines()[0][:500]
    result.failures.append(TaskFailure(task.name, msg, redact_secrets(tb)))
    log.error("shard %s failed: %s", task.name, msg)
    bar.update(1)


def _run_serial(recipe, pending, pipeline, runner, result, redo) -> None:
    hours = [0.0]
    with _progress(len(pending), runner.progress) as bar:
        for task in pending:
            for attempt in range(runner.retries + 1):
                try:
                    record = execute_task(recipe, task, pipeline, task.name in redo)
                except ConfigError:
                    raise  # the same for every task and attempt: the run stops (see ConfigError)
                except Exception as exc:
                    if attempt < runner.retries:
                        log.warning("shard %s failed (%s); retry %d/%d", task.name, redact_secrets(str(exc)),
                                    attempt + 1, runner.retries)
                        continue
                    _on_failed(result, bar, task, exc, traceback.format_exc())
                else:
                    _on_done(result, bar, task, record, hours, redo)
                break


def _scheduler_saturation(dask_scheduler) -> float:
    return dask_scheduler.WORKER_SATURATION


def _worker_profiling(dask_worker) -> bool:
    callback = dask_worker.periodic_callbacks.get("profile")
    return callback is not None and callback.is_running()


def _check_cluster_settings(client) -> None:
    """Say so when a cluster started elsewhere lacks a setting of :data:`CLUSTER_CONFIG` (Dask's defaults differ)."""
    try:
        saturation = client.run_on_scheduler(_scheduler_saturation)
        profiling = sum(client.run(_worker_profiling).values())
    except Exception as exc:  # e.g. a scheduler that refuses to run code sent to it
        log.info("could not read the cluster's settings (%s); see docs/performance.md", exc)
        return
    if saturation != WORKER_SATURATION:
        log.warning(
            "the scheduler's worker-saturation is %s: workers may hold a second shard while others idle at the end "
            "of the run; start the scheduler with DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION=%s",
            saturation, WORKER_SATURATION,
        )
    if profiling:
        log.warning(
            "%d of the workers run Dask's statistical profiler, which takes 3-7 %% of a busy core's encoding; "
            "start the workers with DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False", profiling,
        )


def start_local_cluster(runner: RunnerConfig, config: dict = CLUSTER_CONFIG):
    """The LocalCluster a run without ``--scheduler`` uses: ``runner.workers`` processes, :data:`CLUSTER_CONFIG`
    (bench/pipeline.py passes a variant to measure a setting's cost). Its workers ignore SIGINT (see below)."""
    import dask
    from distributed import LocalCluster

    # the nannies hand the config set here to the worker processes they start
    with dask.config.set(config), _sigint_ignored():
        return LocalCluster(
            n_workers=runner.workers or 1,  # run_recipe resolves None (worker_layout); a direct caller gets 1 x 1
            threads_per_worker=runner.threads_per_worker or 1,
            processes=True,
            memory_limit=runner.memory_limit,
            # A free port: the scheduler serves HTTP with or without bokeh (the dashboard), and on its default
            # port a second run on the machine printed "Port 8787 is already in use".
            dashboard_address=":0",
        )


@contextlib.contextmanager
def _sigint_ignored():
    """Ignore SIGINT while the worker processes start, so that they ignore it for good.

    Ctrl-C in a terminal signals the whole process group: every worker printed its own KeyboardInterrupt
    traceback (or asyncio's shutdown of its event loop) over the driver's one-line hint, ~55 lines in all. An
    ignored signal is the one disposition a process keeps across exec (and Python then installs no handler of its
    own), so the workers never see Ctrl-C; the driver, which does, stops the run and closes them. The cost: a Ctrl-C
    in the seconds the cluster takes to start is lost (press it again once "LocalCluster: ..." is logged).
    Neither alternative is quiet: a blocked signal does not reach the Dask threads that spawn the workers, and a
    worker told to ignore SIGINT once it runs has already imported its modules, where Ctrl-C hits it. Only the
    main thread may set a handler; called from another thread, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _quiet_dask_logging() -> None:
    """Run on our own workers as the run ends: see the end of :func:`_run_dask`."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


def _run_dask(recipe, pending, pipeline, runner, result, redo) -> None:
    from distributed import Client, as_completed

    cluster = None
    if runner.scheduler:
        client = Client(runner.scheduler)
        log.info("connected to %s (%d workers)", runner.scheduler, len(client.scheduler_info().get("workers", {})))
        _check_cluster_settings(client)
    else:
        t0 = time.perf_counter()
        cluster = start_local_cluster(runner)
        client = Client(cluster)
        from sodadata.run.worker_exit import ExitWithoutTeardown  # our own cluster's workers only

        client.register_plugin(ExitWithoutTeardown(), name=ExitWithoutTeardown.name)
        result.cluster_start_seconds = time.perf_counter() - t0
        log.info(
            "LocalCluster: %d workers x %d threads, started in %.1f s%s", runner.workers, runner.threads_per_worker,
            result.cluster_start_seconds, f", dashboard {client.dashboard_link}" if importlib.util.find_spec("bokeh")
            else " (pip install bokeh for the dashboard)",
        )
    hours = [0.0]
    try:
        futures = {}
        for rank, task in enumerate(pending):  # largest first: Dask runs higher priorities first
            fut = client.submit(
                _dask_task, recipe, task, pipeline, task.name in redo, key=f"sodadata-{task.name}",
                retries=runner.retries, pure=False,
                priority=len(pending) - rank,
            )
            futures[fut] = task
        with _progress(len(pending), runner.progress) as bar:
            for fut in as_completed(list(futures)):
                task = futures[fut]
                if fut.status == "finished":
                    value = fut.result()
                    if isinstance(value, _ConfigFault):
                        client.cancel(list(futures))
                        raise ConfigError(value.message)
                    _on_done(result, bar, task, value, hours, redo)
                else:
                    exc = fut.exception()
                    tb = "".join(traceback.format_tb(fut.traceback())) if fut.traceback() else ""
                    _on_failed(result, bar, task, exc, tb)
    finally:
        # Every shard's outcome is known, or the run was interrupted (which the caller reports): what Dask says while
        # closing our cluster is not news, and reads as a fault. Workers stopped mid-task warn of cancelled tasks
        # and lost heartbeats; a worker of a loaded machine is killed after a 4 s grace period. Its errors show
        # in the driver; a cluster given by --scheduler is not ours to silence.
        dask_log = logging.getLogger("distributed")
        level = dask_log.level
        dask_log.setLevel(max(level, logging.ERROR))
        try:
            if cluster is not None:
                try:
                    client.run(_quiet_dask_logging)
                except Exception as exc:  # a cluster already broken: its noise is the least of it; close it anyway
                    log.debug("could not quiet the workers' logging before closing: %s", exc)
            client.close()
            if cluster is not None:
                cluster.close()
        finally:
            dask_log.setLevel(level)


def startup_seconds(result: RunResult, done: list[str]) -> dict:
    """What the run spent on other things than its shards' work: starting the cluster, and in the shards ``done``
    loading the codec (the first shard of each worker process) and the chunked engine's check (once per machine,
    model and software: sodadata.encode.engine_check). Seconds: the sum over the shards and the most one shard spent."""
    out: dict = {"cluster_start": None if result.cluster_start_seconds is None
                 else round(result.cluster_start_seconds, 3)}
    records = [result.records[name] for name in done if name in result.records]
    for key in ("model_load", "engine_check"):
        spent = [rec.get("timings", {}).get(key, 0.0) for rec in records]
        out[key] = {"sum": round(sum(spent), 3), "max": round(max(spent, default=0.0), 3)}
    return out


def describe_startup(startup: dict) -> str:
    parts = [] if startup.get("cluster_start") is None else [f"cluster {startup['cluster_start']:.1f} s"]
    for key, name in (("model_load", "codec load"), ("engine_check", "chunked engine check")):
        spent = startup.get(key) or {}
        if spent.get("sum"):
            parts.append(f"{name} {spent['sum']:.1f} s in all, {spent['max']:.1f} s at most in a shard")
    return ", ".join(parts) or "nothing to start"


def summary_rows(records: dict[str, dict]) -> list[dict]:
    """Per component: shards, documents, rows, hours, tokens, read/written/rejected, characters the text rule folded
    and dropped, rejects by reason."""
    summed = ("documents", "rows", "audio_tokens", "read", "written", "rejected", "text_folded_chars",
              "text_dropped_chars")
    agg: dict[str, dict] = defaultdict(lambda: {"shards": 0, **dict.fromkeys(summed, 0), "hours": 0.0,
                                                "rejects": Counter()})
    for rec in records.values():
        a = agg[rec["component"]]
        a["shards"] += 1
        for k in summed:  # records made before text rule 2 have no fold counts: 0
            a[k] += rec.get(k, 0)
        a["hours"] += rec.get("audio_seconds", 0.0) / 3600
        a["rejects"].update(rec.get("rejects", {}))
    return [{"component": c, **v, "rejects": dict(sorted(v["rejects"].items()))} for c, v in sorted(agg.items())]


def format_summary(result: RunResult) -> str:
    rows = summary_rows(result.records)
    headers = ["component", "shards", "documents", "rows", "hours", "audio tokens", "read", "written", "rejected"]
    body = [
        [r["component"], r["shards"], r["documents"], r["rows"], f"{r['hours']:.3f}", r["audio_tokens"], r["read"],
         r["written"], r["rejected"]]
        for r in rows
    ]
    widths = [max(len(str(h)), *(len(str(b[i])) for b in body)) for i, h in enumerate(headers)] if body else []
    lines = [
        f"shards: {result.tasks} in this run, {result.skipped} already finished, {result.done} done now"
        + (f" ({result.redone} of them redone: made otherwise before)" if result.redone else "")
        + f", {len(result.failures)} failed ({result.elapsed_seconds:.1f} s"
        + (f"; {result.layout.describe()})" if result.layout else ")")
    ]
    if body:
        lines.append("  ".join(str(h).rjust(w) for h, w in zip(headers, widths)))
        lines += ["  ".join(str(v).rjust(w) for v, w in zip(b, widths)) for b in body]
    for r in rows:
        if r["text_folded_chars"] or r["text_dropped_chars"]:
            lines.append(f"text rule in {r['component']}: {r['text_folded_chars']} characters folded, "
                         f"{r['text_dropped_chars']} dropped (SPEC §2)")
        if r["rejects"]:
            reasons = ", ".join(f"{k} {v}" for k, v in r["rejects"].items())
            lines.append(f"rejects in {r['component']}: {reasons}")
    missing = result.completeness.missing
    if missing:
        lines.append(f"INCOMPLETE (--allow-missing): {len(missing)} missing from the source: "
                     f"{completeness.missing_line(missing)}")
    return "\n".join(lines)


def failure_line(result: RunResult) -> str:
    shown = "; ".join(f"{f.task}: {f.error}" for f in result.failures[:3])
    more = f" (and {len(result.failures) - 3} more)" if len(result.failures) > 3 else ""
    return (
        f"error: {len(result.failures)} of {result.tasks} shards failed: {shown}{more}. Fix the cause and rerun "
        "the same command: finished shards are skipped."
    )


def _write_run_summary(out: Location, recipe, pipeline, runner, result: RunResult) -> None:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    try:
        _write_summary_file(out / "_runs" / f"{stamp}.json", recipe, pipeline, runner, result)
    except OSError as exc:
        # The shards and their records are the truth; the summary is a convenience. On a full disk it must not
        # turn a run's clear per-shard report into a traceback.
        log.error("could not write the run summary %s: %s", display(out / "_runs" / f"{stamp}.json"),
                  redact_secrets(str(exc)))


def _write_summary_file(path: Location, recipe, pipeline, runner, result: RunResult) -> None:
    write_json_atomic(
        path,
        {
            "recipe": recipe.describe(),
            "pipeline": {"out": display(pipeline.out), "codec": pipeline.codec.describe() if pipeline.codec else None,
                         "made_by": pipeline.made_by},
            "runner": asdict(runner),
            "layout": result.layout.to_dict() if result.layout else None,
            "startup": result.startup,
            "tasks": result.tasks,
            "skipped": result.skipped,
            "done": result.done,
            "redone": result.redone,
            "failures": [asdict(f) for f in result.failures],
            "completeness": result.completeness.to_dict(),
            "summary": summary_rows(result.records),
            "elapsed_seconds": round(result.elapsed_seconds, 3),
        },
    )
