"""Fail fast, fail once (issue 14): every option is checked in the driver before a cluster starts or a task runs;
a mistake is one line on stderr and exit code 2. Errors no retry can fix (ConfigError) are not retried per task.

Fast: the CLI tests run the recipe CLI in this process with ``run_recipe`` replaced by a tripwire, so a test
fails if anything would start; the runner tests use the serial runner and an in-process (threads) cluster.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from fixtures import make_emilia_source

from sodadata.encode import codec
from sodadata.encode.codec import CodecConfig, check_codec
from sodadata.read.recipe import ConfigError
from sodadata.recipes import emilia, yodas2
from sodadata.recipes.emilia import EmiliaRecipe
from sodadata.run import cli_recipe
from sodadata.run.pipeline import PipelineConfig
from sodadata.run.runner import CLUSTER_CONFIG, RunnerConfig, run_recipe

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample" / "emilia"


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run a recipe CLI in this process; return (exit code, stderr lines). Starting the run fails the test."""

    def tripwire(*args, **kwargs):
        raise AssertionError("the run started: the option should have been refused before")

    monkeypatch.setattr(cli_recipe, "run_recipe", tripwire)

    def run(main, argv: list[str]) -> tuple[int, list[str]]:
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse's errors (``python -m`` exits with the same code)
            rc = exc.code
        return rc, capsys.readouterr().err.strip().splitlines()

    return run


def emilia_argv(out: Path, *extra: str) -> list[str]:
    return ["--source", str(SAMPLE), "--out", str(out), "--codec", "tiny-random", *extra]


@pytest.mark.parametrize("extra, expected", [
    (["--workers", "0"], "error: --workers must be at least 1, got 0"),  # used to hang forever
    (["--threads-per-worker", "0"], "error: --threads-per-worker must be at least 1, got 0"),
    (["--retries", "-1"], "error: --retries must be at least 0, got -1"),
    (["--limit-shards", "0"], "error: --limit-shards must be at least 1, got 0"),  # was "found no source shards"
    (["--batch-size", "0"], "error: --batch-size must be at least 1, got 0"),  # was accepted
    (["--max-batch-seconds", "0"], "error: --max-batch-seconds must be positive, got 0.0"),
    (["--torch-threads", "0"], "error: --torch-threads must be at least 1, got 0"),
    (["--max-utterance-seconds", "-5"], "error: --max-utterance-seconds must be positive, got -5.0"),
    (["--memory-limit", "abc"], "error: --memory-limit 'abc': expected auto, a size such as 4GB, or a fraction of the "
                                "machine's memory such as 0.5"),
    (["--codec", "tiny-randon"],
     "error: unknown codec 'tiny-randon' (did you mean tiny-random?); the built-in ones are tiny-random, full-random"),
    (["--codec", "full-randm"],
     "error: unknown codec 'full-randm' (did you mean full-random?); the built-in ones are tiny-random, full-random"),
])
def test_a_bad_count_or_codec_name_is_one_line_and_exit_2_before_anything_starts(cli, tmp_path, extra, expected):
    out = tmp_path / "out"
    rc, err = cli(emilia.main, emilia_argv(out, *extra))
    assert (rc, err) == (2, [expected])
    assert not out.exists()


def test_out_naming_a_file_says_so(cli, tmp_path):
    (tmp_path / "a-file").write_text("x")
    rc, err = cli(emilia.main, emilia_argv(tmp_path / "a-file"))
    assert (rc, err) == (2, [f"error: --out {tmp_path / 'a-file'} is a file: --out names a directory "
                             "(it is created if missing)"])
    rc, err = cli(emilia.main, emilia_argv(tmp_path / "a-file" / "out"))
    assert rc == 2 and err == [f"error: --out {tmp_path / 'a-file' / 'out'} is inside {tmp_path / 'a-file'}, which "
                               "is a file: --out names a directory (it is created if missing)"]


def test_an_emilia_language_typo_lists_the_languages(cli, tmp_path):
    rc, err = cli(emilia.main, emilia_argv(tmp_path / "out", "--lang", "enn"))
    assert (rc, err) == (2, ["python -m sodadata.recipes.emilia: error: argument --lang: invalid choice: 'enn' "
                             "(choose from 'de', 'en', 'fr', 'ja', 'ko', 'zh') (see --help)"])
    # any case is the folder name: EN works like en (the tripwire shows the options passed)
    with pytest.raises(AssertionError, match="the run started"):
        cli(emilia.main, emilia_argv(tmp_path / "out", "--lang", "EN"))


def test_a_yodas2_language_without_subsets_says_which_there_are(cli, tmp_path):
    rc, err = cli(yodas2.main, ["--lang", "xx", "--source", str(tmp_path), "--out", str(tmp_path / "out"),
                                "--codec", "tiny-random"])
    assert (rc, err) == (2, ["error: catalogs/yodas2.yaml lists subsets for --lang en, not xx: for another language "
                             "pass --subsets (e.g. xx000)"])


def test_argparse_errors_are_one_line(cli, tmp_path):
    rc, err = cli(emilia.main, emilia_argv(tmp_path / "out", "--workers", "two"))
    assert (rc, err) == (2, ["python -m sodadata.recipes.emilia: error: argument --workers: invalid int value: 'two' "
                             "(see --help)"])


def test_train_argparse_errors_are_one_line(capsys):
    from train.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--recipe", "recipes/soda.yaml"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "python -m train: error: the following arguments are required: --steps (see --help)"]


def save_fake_mimi(folder: Path, model_type: str = "mimi", weights: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    if weights:
        (folder / "model.safetensors").write_bytes(b"not read by the check")
    return folder


def test_a_local_codec_folder_must_be_a_mimi_save_pretrained(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        str(tmp_path / "missing"): f"error: --codec '{tmp_path / 'missing'}': no such directory",
        str(empty): f"error: --codec '{empty}' has no config.json: not a directory written by "
                    "MimiModel.save_pretrained",
        str(save_fake_mimi(tmp_path / "bert", model_type="bert")): f"error: --codec '{tmp_path / 'bert'}' holds a "
                                                                   "'bert' model, not Mimi",
        str(save_fake_mimi(tmp_path / "bare", weights=False)): f"error: --codec '{tmp_path / 'bare'}' has no weights "
                                                               "(*.safetensors, *.bin)",
        str(tmp_path / "bare" / "config.json"): f"error: --codec '{tmp_path / 'bare' / 'config.json'}' is a file: "
                                                "pass the directory MimiModel.save_pretrained wrote",
    }
    for name, expected in cases.items():
        rc, err = cli(emilia.main, emilia_argv(tmp_path / "out", "--codec", name))
        assert (rc, err) == (2, [expected]), name
    check_codec(CodecConfig(codec=str(save_fake_mimi(tmp_path / "good"))))  # what save_pretrained writes passes


def test_a_hub_codec_offline_is_one_line_or_the_local_cache(cli, tmp_path, monkeypatch):
    from huggingface_hub import constants

    # HF_HUB_OFFLINE: huggingface_hub refuses every request, as on a machine without network (no network here)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    rc, err = cli(emilia.main, emilia_argv(tmp_path / "out", "--codec", "kyutai/mimii"))
    assert (rc, err) == (2, ["error: --codec 'kyutai/mimii': cannot reach the Hub (HF_HUB_OFFLINE is set) and the "
                             "model is not in the local cache. Download it where the Hub is reachable, pass a local "
                             "MimiModel.save_pretrained directory, or use --codec tiny-random for an offline demo "
                             "(did you mean kyutai/mimi?)"])
    # a model in the local cache (the layout huggingface_hub writes) is accepted offline
    repo = tmp_path / "hub-cache" / "models--kyutai--mimi"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    save_fake_mimi(repo / "snapshots" / commit)
    check_codec(CodecConfig(codec="kyutai/mimi"))
    with pytest.raises(ConfigError, match="not in the local cache"):
        check_codec(CodecConfig(codec="kyutai/mimi", revision="v9"))


def test_check_codec_accepts_the_built_in_models():
    for name in codec.RANDOM_CODECS:
        check_codec(CodecConfig(codec=name))


# --- the runner: a ConfigError met by a task stops the run at once, without retries ---------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("emilia-src")
    make_emilia_source(root, quirks=False, tars_per_subset=2, docs_per_tar=1, utts_per_doc=1)
    return root


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """Every attempt to load the codec: the Dask task it ran in (the in-process cluster runs tasks in threads)."""
    from distributed.worker import thread_state

    calls: list[str] = []
    lock = threading.Lock()
    real = codec.load_mimi

    def counting(config, *args, **kwargs):
        with lock:
            calls.append(getattr(thread_state, "key", "serial"))
        return real(config, *args, **kwargs)

    monkeypatch.setattr(codec, "load_mimi", counting)
    return calls


def on_a_worker_without_the_codec(tmp_path: Path) -> PipelineConfig:
    """What a worker meets when the driver found the codec folder and the worker's machine lacks it: a pipeline
    config prepared on the driver (made_by set, so run_recipe does not check the codec again) naming a folder
    that is not there."""
    codec_config = CodecConfig(codec=str(tmp_path / "no-such-codec"), threads=1)
    return PipelineConfig(out=str(tmp_path / "out"), codec=codec_config, made_by={"prepared": "on the driver"})


def test_serial_run_stops_at_the_first_config_error_without_retries(source, tmp_path, loads):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="no-such-codec': no such directory"):
        run_recipe(EmiliaRecipe(source=str(source)), on_a_worker_without_the_codec(tmp_path),
                   RunnerConfig(serial=True, retries=2, progress=False))
    assert len(loads) == 1  # one task, once: not 4 tasks x 3 attempts
    assert not list(out.rglob("*.json"))


def test_the_driver_refuses_a_missing_codec_folder_before_listing(tmp_path):
    class Unlisted(EmiliaRecipe):
        def tasks(self):
            raise AssertionError("listed the source")

    codec_config = CodecConfig(codec=str(tmp_path / "no-such-codec"))
    with pytest.raises(ConfigError, match="no-such-codec': no such directory"):
        run_recipe(Unlisted(), PipelineConfig(out=str(tmp_path / "out"), codec=codec_config), RunnerConfig(serial=True))


def test_dask_run_stops_at_the_first_config_error_without_retries(source, tmp_path, loads):
    import dask
    from distributed import LocalCluster

    out = tmp_path / "out"
    with dask.config.set(CLUSTER_CONFIG), LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                                       dashboard_address=":0") as cluster:
        with pytest.raises(ConfigError, match="no-such-codec': no such directory"):
            run_recipe(EmiliaRecipe(source=str(source)), on_a_worker_without_the_codec(tmp_path),
                       RunnerConfig(scheduler=cluster.scheduler_address, retries=2, progress=False))
    # Failing at once, the next tasks may start before the driver cancels them; none is retried (each key once),
    # where every task used to be tried 3 times
    assert 1 <= len(loads) <= 4 and len(set(loads)) == len(loads), loads
    assert not list(out.rglob("*.json"))
