"""``sodadata plan``: the real CLI against SODA's published figures, codebooks/formats, rates and errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sodadata.cli import main as cli_main
from sodadata.tools import plan

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``sodadata plan ARGS`` as a user runs it: a new process, in ``cwd``."""
    return subprocess.run([sys.executable, "-m", "sodadata.cli", "plan", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def cli(capsys, monkeypatch):
    """``sodadata plan ARGS`` through the same entry point (``sodadata.cli.main``), in this process (fast):
    (exit code, stdout, stderr)."""
    monkeypatch.chdir(REPO)

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = cli_main(["plan", *args])
        except SystemExit as exc:  # argparse
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def plan_json(cli):
    def run(*args: str) -> dict:
        code, out, err = cli(*args, "--json")
        assert code == 0, err
        return json.loads(out)

    return run


def by_name(result: dict) -> dict[str, dict]:
    return {c["name"]: c for c in result["components"]}


def test_soda_500b_run_matches_the_papers_figures(plan_json):
    result = plan_json("recipes/soda.yaml", "--tokens", "500B")
    assert result["tokens"] == 500e9 and result["codebooks"] == 8 and result["formats"] == ["text_first", "audio_first"]
    comps = by_name(result)
    soda = yaml.safe_load((REPO / "recipes" / "soda.yaml").read_text())
    assert list(comps) == [c["name"] for c in soda["components"]]  # the recipe's components, in its order
    for c in soda["components"]:  # weights from the recipe (its one home), tokens = T x weight
        assert comps[c["name"]]["weight"] == pytest.approx(c["weight"] / sum(x["weight"] for x in soda["components"]))
        assert comps[c["name"]]["tokens"] == pytest.approx(500e9 * comps[c["name"]]["weight"])
    # SODA's table: 164K h of Yodas English ~ 131B tokens in both formats; Emilia-YODAS 73B, Emilia 37B
    for name, published in (("yodas2/en", 131e9), ("emilia-yodas/en", 73e9), ("emilia/en", 37e9)):
        assert comps[name]["unique_tokens"] == pytest.approx(published, rel=0.01), name
    assert comps["yodas2/en"]["catalog_hours"] == 164_000 == comps["yodas2/en"]["audio_hours"]
    # ~2 passes over the rows of each speech component, each in two formats: every hour of audio ~4 times (SODA's
    # "~4 epochs"); Nemotron-CC's 5 % is a small part of its tokens
    for name in ("yodas2/en", "emilia-yodas/en", "emilia/en"):
        assert comps[name]["epochs"] == pytest.approx(1.97, abs=0.03)
        assert comps[name]["audio_epochs"] == pytest.approx(3.94, abs=0.06)
    text = comps["nemotron-cc/hq-actual"]
    assert text["kind"] == "text" and text["epochs"] == pytest.approx(25e9 / 553e9) and text["audio_hours"] == 0
    # encoding cost at the CPU rate of BENCHMARKS.md; no GPU figure is measured, so none is made up
    assert result["total"]["audio_hours"] == pytest.approx(302_800)
    assert result["total"]["cpu_core_hours"] == pytest.approx(302_800 / plan.CPU_AUDIO_HOURS_PER_CORE_HOUR)
    assert comps["yodas2/en"]["gpu_hours"] is None and result["total"]["gpu_hours"] is None
    assert comps["yodas2/en"]["disk_bytes"] == pytest.approx(164_000 * 720_000 * 234 / 200)


def test_flops_and_params_give_tokens_by_6nd(plan_json):
    by_flops = plan_json("soda", "--flops", "1.2e22", "--params", "4e9")
    assert by_flops["tokens"] == pytest.approx(500e9)
    assert by_flops["tokens_from"] == {"flops": 1.2e22, "params": 4e9, "rule": "T = C / 6N"}
    by_tokens = plan_json("soda", "--tokens", "5e11")
    for a, b in zip(by_flops["components"], by_tokens["components"], strict=True):
        assert a["tokens"] == pytest.approx(b["tokens"]) and a["epochs"] == pytest.approx(b["epochs"])


def test_codebooks_and_formats_change_the_unique_tokens(plan_json):
    hours = 164_000
    full = by_name(plan_json("soda", "--tokens", "500B"))["yodas2/en"]
    semantic = by_name(plan_json("soda", "--tokens", "500B", "--codebooks", "1"))["yodas2/en"]
    assert semantic["unique_tokens"] == pytest.approx(hours * 2 * (3600 * 12.5 + plan.TEXT_TOKENS_PER_HOUR))
    one = by_name(plan_json("soda", "--tokens", "500B", "--formats", "text_first"))["yodas2/en"]
    assert one["unique_tokens"] == pytest.approx(full["unique_tokens"] / 2)
    assert one["audio_epochs"] == pytest.approx(one["epochs"]) == pytest.approx(2 * full["epochs"])
    # the paper's S ablation: semantic codebook only, audio only: no text tokens
    s = by_name(plan_json("soda", "--tokens", "500B", "--codebooks", "1", "--formats", "audio_only"))["yodas2/en"]
    assert s["unique_tokens"] == pytest.approx(hours * 3600 * 12.5)
    three = by_name(plan_json("soda", "--tokens", "500B", "--formats", "text_first,audio_first,audio_only"))
    assert three["yodas2/en"]["unique_tokens"] == pytest.approx(full["unique_tokens"] + hours * 360_000)
    assert three["yodas2/en"]["audio_epochs"] == pytest.approx(3 * three["yodas2/en"]["epochs"])


def test_a_short_run_encodes_only_what_it_needs_and_rates_override(plan_json):
    result = plan_json("soda", "--tokens", "10B", "--rate", "10", "--gpu-rate", "5000", "--text-tokens-per-hour", "0")
    y = by_name(result)["yodas2/en"]
    needed_hours = 10e9 * y["weight"] / 720_000  # no text: 2 x 360,000 tokens an hour
    assert y["audio_hours"] == pytest.approx(needed_hours) and y["epochs"] < 1
    assert y["cpu_core_hours"] == pytest.approx(needed_hours / 10) and y["gpu_hours"] == pytest.approx(needed_hours / 5000)
    assert result["total"]["gpu_hours"] == pytest.approx(sum(c["gpu_hours"] for c in result["components"]))


def test_librispeech_and_unknown_components(tmp_path, cli, plan_json):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"components": [
        {"name": "dev", "path": "out/librispeech/dev-clean", "weight": 1},
        {"name": "mine", "path": "mine/en", "weight": 1}]}))
    code, out, err = cli(str(recipe), "--tokens", "1M")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "component 'mine'" in err and "--hours 'mine=HOURS'" in err
    comps = by_name(plan_json(str(recipe), "--tokens", "1M", "--hours", "mine=2.5"))
    assert comps["dev"]["catalog_hours"] == 5.4  # found by its path: catalogs/librispeech.yaml
    assert comps["mine"]["catalog_hours"] == 2.5


@pytest.mark.parametrize("args, message", [
    (["--tokens", "1B", "--flops", "1e20", "--params", "1e8"], "either --tokens"),
    (["--flops", "1e20"], "--flops and --params go together"),
    (["--tokens", "-5"], "expected a number"),
    (["--tokens", "1B", "--rate", "0"], "expected a positive number"),
    (["--tokens", "1B", "--codebooks", "9"], "--codebooks: must be an integer from 1 to 8"),
    (["--tokens", "1B", "--formats", "text_first,text_first"], "--formats: text_first named twice"),
    (["--tokens", "1B", "--hours", "nope=3"], "not components of"),
])
def test_bad_options_exit_2_with_one_line(cli, args, message):
    code, out, err = cli("soda", *args)
    assert code == 2 and message in err and out == "" and err.count("\n") == 1, err


def _bench_section(name: str) -> str:
    text = (REPO / "BENCHMARKS.md").read_text()
    m = re.search(rf"<!-- bench:{name} -->(.*?)<!-- /bench:{name} -->", text, re.S)
    return m[1] if m else ""


def test_the_constants_are_the_figures_in_benchmarks_md():
    row = re.search(r"^\| 2 workers x 1 torch thread +\|[^|]*\|[^|]*\| ([0-9.]+)x", _bench_section("pipeline"), re.M)
    assert row and float(row[1]) == plan.CPU_AUDIO_HOURS_PER_CORE_HOUR, "update plan.CPU_AUDIO_HOURS_PER_CORE_HOUR"
    write = re.search(r"^\| 1 h +\|[^|]*\|[^|]*\| ([0-9]+) +\|", _bench_section("codes"), re.M)
    assert write and float(write[1]) / 200 == plan.PARQUET_BYTES_PER_AUDIO_TOKEN, "update PARQUET_BYTES_PER_AUDIO_TOKEN"
    # no GPU figure made up: when bench/gpu.py has written its section, the planner must use it
    assert (plan.GPU_AUDIO_HOURS_PER_GPU_HOUR is None) == (not _bench_section("gpu")), "update GPU_AUDIO_HOURS_PER_GPU_HOUR"


def test_the_documented_command_runs_as_printed(tmp_path):
    doc = (REPO / "docs" / "mixture.md").read_text()
    section = doc.split("Planning a run\n", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^sodadata plan .*$", section, re.M)
    table = "\n".join(re.findall(r"^\|.*\|$", section, re.M)[:7])  # the table the first command prints
    assert len(commands) == 3 and table.count("\n") == 6
    for k, command in enumerate(commands):
        proc = run_cli(*command.split()[2:], cwd=tmp_path)  # from any folder: packaged mixtures load by name
        assert proc.returncode == 0, (command, proc.stderr)
        if k == 0:
            assert proc.stdout.startswith(table + "\n"), proc.stdout
