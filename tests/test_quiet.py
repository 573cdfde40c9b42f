"""Quiet by default (issue 14): the README demo prints the random-codec banner once and the run's own lines, no
other warning; Ctrl-C, as a terminal sends it (SIGINT to the whole process group), prints the one-line hint and no
traceback, in a recipe with a LocalCluster running and in ``python -m train``; training prints no JAX backend
probing. Each test runs the real command in a subprocess, with the environment a user has (no logging variables).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from fixtures import make_emilia_source
from synthetic import SODA_LIKE, WORDS, make_output_dir

from sodadata.encode.codec import NOT_REAL_WARNING
from sodadata.run.cli_recipe import INTERRUPTED

REPO = Path(__file__).resolve().parent.parent
BANNER = f"*** WARNING: {NOT_REAL_WARNING.format(name='tiny-random')} ***"
TQDM_FRAME = re.compile(r"^shards:\s+\d+%\|")
CLOCK = r"\d\d:\d\d:\d\d"


def user_env() -> dict[str, str]:
    """This environment without the variables the commands set by default (a user's shell has none of them)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_VERBOSITY", "DASK_LOGGING__DISTRIBUTED", "JAX_PLATFORMS")}
    return {**env, "PYTHONPATH": str(REPO)}


def lines(stderr: str) -> list[str]:
    """stderr's lines, without the progress bar's frames (tqdm redraws its line with carriage returns)."""
    parts = re.split(r"[\r\n]+", stderr)
    return [p for p in parts if p.strip() and not TQDM_FRAME.match(p)]


class Running:
    """A command started as a terminal starts it (its own process group), its stderr read as it comes."""

    def __init__(self, cmd: list[str], cwd: Path) -> None:
        # A terminal's job gets SIGINT's default action; a test run from a background job (nohup, `cmd &`, some CI
        # runners) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt: restore the default.
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.err: list[str] = []
        self.reader = threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True)
        self.reader.start()

    def wait_for(self, pattern: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(re.search(pattern, line) for line in list(self.err)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"never printed {pattern!r} (rc {self.proc.poll()}):\n{''.join(self.err)}")
            time.sleep(0.05)

    def ctrl_c(self, timeout: float = 120) -> tuple[int, str, list[str]]:
        """SIGINT to the process group, as Ctrl-C in a terminal; (exit code, stdout, stderr lines)."""
        os.killpg(self.proc.pid, signal.SIGINT)
        out = self.proc.stdout.read()
        rc = self.proc.wait(timeout)
        self.reader.join(timeout)
        return rc, out, lines("".join(self.err))


@pytest.mark.parametrize("verbose", [False, True])
def test_hub_retries_are_hidden_unless_verbose_and_said_once(verbose):
    # a real retry loop of huggingface_hub against a port that refuses connections
    code = "\n".join([
        f"from sodadata.cli import setup_logging; setup_logging({verbose})",
        "from huggingface_hub.utils import http_backoff",
        "try:",
        "    http_backoff('GET', 'http://127.0.0.1:9/', max_retries=2, base_wait_time=0.01, max_wait_time=0.01)",
        "except Exception as exc:",
        "    print(type(exc).__name__)",
    ])
    done = subprocess.run([sys.executable, "-c", code], env=user_env(), capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ConnectError", done.stderr
    retries = [line for line in done.stderr.splitlines() if "Retrying in" in line]
    if verbose:  # each once (huggingface_hub's own handler printed them a second time)
        assert [line.split(": ", 1)[1] for line in retries] == ["Retrying in 0.01s [Retry 1/2].",
                                                                 "Retrying in 0.01s [Retry 2/2]."], done.stderr
    else:
        assert done.stderr == "", done.stderr


@pytest.mark.slow
def test_readme_demo_prints_the_banner_once_and_no_other_warning(tmp_path):
    # the README's command, as printed (with the output in a temporary folder)
    cmd = [sys.executable, "-m", "sodadata.recipes.emilia", "--lang", "en", "--source", "sample/emilia",
           "--codec", "tiny-random", "--out", str(tmp_path / "out")]
    done = subprocess.run(cmd, cwd=REPO, env=user_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    err = lines(done.stderr)
    # the banner, once, first; then only sodadata's own INFO lines (no warning, no other library, no traceback),
    # among them the runner's two
    assert err[0] == BANNER and BANNER not in err[1:], err
    assert all(re.fullmatch(rf"{CLOCK} INFO sodadata\.[a-z_.]+: .+", line) for line in err[1:]), err
    runner = [line for line in err if " sodadata.run.runner: " in line]
    assert len(runner) == 3, err
    assert re.search(r"INFO sodadata\.run\.runner: 2 shards: 0 already finished \(skipped\), 2 to do$", runner[0]), err
    # the default layout: a worker per usable core, at most one per shard (sodadata.run.worker_layout)
    cores = len(os.sched_getaffinity(0))
    workers, threads = min(cores, 2), max(1, cores // min(cores, 2))
    assert re.search(rf"INFO sodadata\.run\.runner: LocalCluster: {workers} workers x 1 threads, started in", runner[1]), err
    assert re.search(r"INFO sodadata\.run\.runner: start-up: cluster \d+\.\d s, codec load", runner[2]), err
    # the summary is the command's output, the layout it chose in its first line
    out = done.stdout.splitlines()
    torch = f"{threads} torch thread{'s' if threads > 1 else ''}"
    assert re.fullmatch(rf"shards: 2 in this run, 0 already finished, 2 done now, 0 failed \(\d+\.\d s; "
                        rf"{workers} workers? x {torch}, cpu\)", out[0]), out
    assert [line.split()[0] for line in out[1:]] == ["component", "emilia-yodas/en", "emilia/en"], out


@pytest.mark.slow
@pytest.mark.parametrize("recipe, args", [
    ("yodas2", ["--lang", "en", "--source", "sample/yodas2", "--codec", "tiny-random"]),
    ("mls", ["--lang", "en", "--source", "sample/mls", "--codec", "tiny-random"]),
    ("nemotron_cc", ["--source", "sample/nemotron-cc"]),
])
def test_every_sample_run_prints_no_warning(tmp_path, recipe, args):
    # the recipes' --help examples on their samples, run serially (same messages, no cluster to start)
    cmd = [sys.executable, "-m", f"sodadata.recipes.{recipe}", *args, "--out", str(tmp_path / "out"), "--serial"]
    done = subprocess.run(cmd, cwd=REPO, env=user_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    err = lines(done.stderr)
    if "tiny-random" in args:
        assert err[0] == BANNER and BANNER not in err[1:], err
        err = err[1:]
    assert err and all(re.fullmatch(rf"{CLOCK} INFO sodadata\.[a-z_.]+: .+", line) for line in err), err


@pytest.mark.slow
def test_ctrl_c_in_a_recipe_on_a_local_cluster_prints_the_hint_alone(tmp_path):
    make_emilia_source(tmp_path / "src", quirks=False, tars_per_subset=3, docs_per_tar=2, utts_per_doc=3,
                       seconds=(4.0, 8.0))
    run = Running([sys.executable, "-m", "sodadata.recipes.emilia", "--source", str(tmp_path / "src"),
                   "--codec", "tiny-random", "--out", str(tmp_path / "out"), "--workers", "2"], cwd=tmp_path)
    run.wait_for("LocalCluster: 2 workers", timeout=300)  # the workers are up and have their first shards
    rc, out, err = run.ctrl_c()
    assert rc == 130 and out == "", (rc, out, err)
    # was ~55 lines of tracebacks from the workers and Dask's shutdown: now the banner, sodadata's INFO lines
    # before the interrupt, and the hint
    assert err[0] == BANNER and err[-1] == INTERRUPTED, err
    assert all(re.fullmatch(rf"{CLOCK} INFO sodadata\.[a-z_.]+: .+", line) for line in err[1:-1]), err


@pytest.fixture(scope="module")
def train_data(tmp_path_factory) -> dict[str, Path]:
    from sodadata.mix.tokenizer import build_tokenizer, save_tokenizer, train_small_base

    root = tmp_path_factory.mktemp("train")
    make_output_dir(root / "data", tuple(replace(c, shards=4, docs_per_shard=max(c.docs_per_shard, 8))
                                         for c in SODA_LIKE), seed=3)
    corpus = [" ".join(WORDS[i:] + WORDS[:i]).capitalize() + "." for i in range(len(WORDS))] * 4
    save_tokenizer(build_tokenizer(train_small_base(corpus, vocab_size=400)), root / "tok")
    return {"data": root / "data", "tok": root / "tok"}


def train_cmd(data: dict[str, Path], *args: str) -> list[str]:
    return [sys.executable, "-m", "train", "--recipe", str(REPO / "recipes" / "soda.yaml"), "--data",
            str(data["data"]), "--tokenizer", str(data["tok"]), "--model", "tiny", "--seq-len", "32",
            "--batch-size", "16", *args]


@pytest.mark.slow
def test_a_training_step_prints_no_backend_probing(train_data):
    done = subprocess.run(train_cmd(train_data, "--steps", "1"), cwd=REPO, env=user_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    err = done.stderr.splitlines()
    # JAX's "Unable to initialize backend 'tpu'" and absl's constant-schedule note were INFO lines of every run
    assert not [line for line in err if " jax" in line or "absl" in line or "backend" in line], err
    warnings = [line for line in err if " WARNING " in line]
    assert len(warnings) == len(set(warnings)) <= 1, warnings  # at most the one lanes-share-shards line
    assert any(re.search(r"INFO train\.trainer: step 1/1 loss", line) for line in err), err


@pytest.mark.slow
def test_ctrl_c_in_training_prints_the_hint_alone(train_data):
    run = Running(train_cmd(train_data, "--steps", "100000", "--log-every", "1"), cwd=REPO)
    run.wait_for(r"INFO train\.trainer: step 1/100000", timeout=600)  # compiled and running
    rc, _, err = run.ctrl_c()
    assert rc == 130, (rc, err)
    # was a 34-line KeyboardInterrupt traceback
    assert err[-1] == "interrupted: nothing was saved (no --ckpt); pass --ckpt DIR to make a run resumable", err
    assert not any("Traceback" in line or "KeyboardInterrupt" in line for line in err), err


def test_the_training_interrupt_line_names_the_checkpoint_to_resume_from(tmp_path):
    from train.cli import interrupted_line

    ckpt = tmp_path / "ckpt"
    assert interrupted_line(str(ckpt)) == (f"interrupted before the first checkpoint in {ckpt}: rerun the same "
                                           "command to start again")
    for step in (4, 8):
        (ckpt / f"step_{step:08d}").mkdir(parents=True)
        (ckpt / f"step_{step:08d}" / "meta.json").write_text("{}")
    (ckpt / "step_00000012").mkdir()  # unfinished: no meta.json
    assert interrupted_line(str(ckpt)) == (f"interrupted: rerun the same command to resume from "
                                           f"{ckpt / 'step_00000008'} (steps after it are lost)")
