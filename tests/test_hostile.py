"""Hostile input and secrets.

* Tar members named ``../x``, ``/abs/x``, symlinks, hard links, devices and directories: nothing is ever written
  outside the output (tars are streamed and never extracted; a member name is only ever split for its key).
* Decompression bombs (a 512 MiB member of a plain tar, a 1 GiB WAV in a tar.gz, a 1 GiB zstd line): each is
  stopped unread with a reject, and a task's peak memory, measured in a subprocess, stays bounded.
* A recognisable fake ``HF_TOKEN`` never appears in logs, stdout/stderr, records, rejects, run summaries, shards,
  cards or exceptions, on every path that could hold it: recipes with faults and failures, a Hub that answers
  401 to every request carrying the token, source URLs that embed credentials, ``sodadata push``.
"""

from __future__ import annotations

import gzip
import http.server
import io
import json
import logging
import os
import re
import subprocess
import sys
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pyarrow.parquet as pq
import pytest
import zstandard
from fixtures import encode_audio, make_emilia_source, speechlike
from fixtures_nemotron import BASE, KEPT, record_line, write_paths_file
from fixtures_yodas2 import Caption, Video, write_shard
from test_reliability_report import publish, table

from sodadata.encode.codec import CodecConfig
from sodadata.read.completeness import write_sample_marker
from sodadata.read.recipe import Reject
from sodadata.recipes.emilia import EmiliaRecipe
from sodadata.recipes.nemotron_cc import NemotronCCRecipe
from sodadata.recipes.yodas2 import Yodas2Recipe
from sodadata.run import cli_recipe
from sodadata.run.pipeline import PipelineConfig
from sodadata.run.runner import RunnerConfig, run_recipe

REPO = Path(__file__).resolve().parent.parent
FAKE_TOKEN = "hf_FAKEtokenHostileTest0123456789abcdefXYZ"
CODEC = CodecConfig(codec="tiny-random", threads=1)
SERIAL = RunnerConfig(serial=True, progress=False, retries=0)


# --- tar members that point outside ---------------------------------------------------------------------------


def hostile_members(key: str, audio: bytes, outside: Path) -> list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]:
    """Members a malicious tar could hold, each aimed at ``outside`` (a folder that must stay empty)."""

    def info(name: str, data: bytes = b"", **kw) -> tuple[tarfile.TarInfo, bytes]:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        ti.mtime = 1_700_000_000
        for k, v in kw.items():
            setattr(ti, k, v)
        return ti, data

    meta = json.dumps({"text": " hostile but harmless"}).encode()
    rel = os.path.relpath(outside, "/")
    return [
        info(f"../../../../../../{rel}/{key}0.json", meta), info(f"../../../../../../{rel}/{key}0.mp3", audio),
        info(f"{outside}/{key}1.json", meta), info(f"{outside}/{key}1.mp3", audio),
        info(f"{key}2.mp3", type=tarfile.SYMTYPE, linkname=str(outside / "symlink-target")),
        info(f"{key}3.mp3", type=tarfile.LNKTYPE, linkname=f"../../../../../../{rel}/hardlink-target"),
        info(f"{key}4.mp3", type=tarfile.CHRTYPE, devmajor=1, devminor=3),
        info(f"{key}5.mp3", type=tarfile.FIFOTYPE),
        info(f"../../../../../../{rel}/dir/", type=tarfile.DIRTYPE),
    ]


def write_members(path: Path, members, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tar:
        for ti, data in members:
            tar.addfile(ti, io.BytesIO(data) if ti.isfile() else None)


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_tar_members_aimed_outside_are_never_written_anywhere(tmp_path: Path, monkeypatch):
    outside = tmp_path / "outside"  # every hostile name points here
    outside.mkdir()
    sandbox = tmp_path / "cwd"
    sandbox.mkdir()
    monkeypatch.chdir(sandbox)  # relative names would land here if anything extracted them
    audio = encode_audio(speechlike(0.6, 1))
    emilia_src, yodas_src = tmp_path / "emilia", tmp_path / "yodas2"
    write_sample_marker(emilia_src, "emilia")
    write_members(emilia_src / "Emilia/EN/EN-B000000.tar",
                  hostile_members("EN_B00000_S00000_W00000", audio, outside), "w")
    # Yodas2: the same names in a tar.gz, plus a real video so the shard has work to do
    write_shard(yodas_src, "en000", "00000000", [Video("real_video1", 1.0, [Caption(0, 0, 90, "real caption")])])
    wav = (yodas_src / "data/en000/audio/00000000.tar.gz")
    real = tarfile.open(wav).extractfile("real_video1.wav").read()  # reading a member: no path involved
    members = [m for m in hostile_members("real_video1", real, outside) if not m[0].name.endswith(".json")]
    for ti, _ in members:
        ti.name = ti.name.replace(".mp3", ".wav")
    real_info = tarfile.TarInfo("real_video1.wav")
    real_info.size = len(real)
    write_members(wav, [*members, (real_info, real)], "w:gz")
    before = tree(tmp_path)
    rows = []
    for recipe, out in ((EmiliaRecipe(source=str(emilia_src), subsets=("emilia",)), tmp_path / "out-emilia"),
                        (Yodas2Recipe(source=str(yodas_src), subsets=("en000",)), tmp_path / "out-yodas2")):
        result = run_recipe(recipe, PipelineConfig(out=str(out), codec=CODEC), SERIAL)
        assert result.ok, result.failures
        rejects = pq.read_table(next(out.rglob("rejects/*.parquet"))).to_pylist()
        reasons = {r["id"]: r["reason"] for r in rejects}
        links = [r for r in reasons.values() if r in ("tar_unsupported_member", "unexpected_member")]
        assert len(links) == 4, reasons  # symlink, hard link, character device, fifo
        rows.append([recipe.name, "`../`×6 and absolute member names, symlink, hard link, char device, fifo, "
                             "directory", f"links/devices rejected ({len(links)}), other members read as data by "
                             "base name; nothing written outside", len(tree(out))])
    # Every hostile name and link target resolves into `outside` (relative ones from the cwd and from the output).
    assert list(outside.iterdir()) == []
    assert list(sandbox.iterdir()) == []
    assert tree(tmp_path) - {t for t in tree(tmp_path) if t.startswith(("out-emilia", "out-yodas2"))} == before
    # never extracting at all: no extract()/extractall() anywhere in the package
    calls = [str(p) for p in (REPO / "sodadata").rglob("*.py") if re.search(r"\.extract(all)?\(", p.read_text())]
    assert calls == []
    publish("hostile-tar", table(["recipe", "members tried", "outcome", "files in the output"], rows)
            + "\n\nNo file appeared outside the output (the target folder, the working directory and the test's "
            "tree were compared before and after); no `extract()`/`extractall()` call exists in `sodadata/`.")


# --- decompression bombs, peak memory in a subprocess ----------------------------------------------------------

PROBE = r"""
import json, sys, threading, time
import psutil
from sodadata.recipes.emilia import EmiliaRecipe
from sodadata.recipes.nemotron_cc import NemotronCCRecipe
from sodadata.recipes.yodas2 import Yodas2Recipe
kind, source, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
recipe = {"emilia": lambda: EmiliaRecipe(source=source, subsets=("emilia",), max_member_bytes=limit),
          "yodas2": lambda: Yodas2Recipe(source=source, subsets=("en000",), max_wav_bytes=limit),
          "nemotron": lambda: NemotronCCRecipe(source=source, max_line_bytes=limit)}[kind]()
tasks = recipe.tasks()
proc = psutil.Process()
base = proc.memory_info().rss
peak = [base]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.002)
threading.Thread(target=sample, daemon=True).start()
t0 = time.perf_counter()
reasons = {}
for task in tasks:
    for item in recipe.read(task):
        key = getattr(item, "reason", "item")
        reasons[key] = reasons.get(key, 0) + 1
done.set()
time.sleep(0.01)
peak[0] = max(peak[0], proc.memory_info().rss)
print(json.dumps({"reasons": reasons, "grow_mb": (peak[0] - base) / 2**20, "seconds": time.perf_counter() - t0}))
"""


def probe(kind: str, source: Path, limit: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", PROBE, kind, str(source), str(limit)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def sparse_tar(path: Path, members: list[tuple[str, bytes]], huge_name: str, huge_size: int) -> int:
    """A plain tar whose member ``huge_name`` holds ``huge_size`` zero bytes stored as a hole (no disk used)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            f.write(ti.tobuf(format=tarfile.GNU_FORMAT) + data + b"\0" * (-len(data) % 512))
        ti = tarfile.TarInfo(huge_name)
        ti.size = huge_size
        f.write(ti.tobuf(format=tarfile.GNU_FORMAT))
        f.seek(huge_size + -huge_size % 512, os.SEEK_CUR)
        f.write(b"\0" * 1024 * 10)
    return path.stat().st_blocks * 512


@pytest.mark.slow
def test_decompression_bombs_are_stopped_with_bounded_memory(tmp_path: Path):
    rows = []
    # Emilia: a plain tar whose MP3 member claims 512 MiB (a corrupt header or a hostile tar)
    emilia = tmp_path / "emilia"
    audio = encode_audio(speechlike(0.6, 1))
    key = "EN_B00000_S00000_W000000"
    on_disk = sparse_tar(emilia / "Emilia/EN/EN-B000000.tar",
                         [(f"{key}.json", b'{"text": " fine"}'), (f"{key}.mp3", audio),
                          ("EN_B00000_S00000_W000001.json", b'{"text": " bomb"}')],
                         "EN_B00000_S00000_W000001.mp3", 512 * 2**20)
    capped = probe("emilia", emilia, 64 * 2**20)
    assert capped["reasons"] == {"item": 1, "member_too_large": 1}, capped
    uncapped = probe("emilia", emilia, 2**40)
    assert capped["grow_mb"] < 48 and uncapped["grow_mb"] > 400, (capped, uncapped)
    rows.append(["Emilia plain tar: one MP3 member of 512 MiB", f"{on_disk / 2**20:.1f} MiB on disk (sparse)",
                 "reject member_too_large (cap 64 MiB)", f"+{capped['grow_mb']:.0f} MiB",
                 f"+{uncapped['grow_mb']:.0f} MiB (cap lifted)"])

    # Yodas2: a tar.gz whose WAV member is 1 GiB of zeros (1 MB of gzip)
    yodas = tmp_path / "yodas2"
    write_shard(yodas, "en000", "00000000", [Video("bomb_video0", 2.0, [Caption(0, 0, 100, "a"),
                                                                      Caption(1, 100, 200, "b")])])
    gz = yodas / "data/en000/audio/00000000.tar.gz"
    size = 2**30
    with gzip.GzipFile(gz, "wb", compresslevel=1, mtime=0) as f:
        ti = tarfile.TarInfo("bomb_video0.wav")
        ti.size = size
        f.write(ti.tobuf())
        block = b"\0" * 2**22
        for _ in range(size // len(block)):
            f.write(block)
        f.write(b"\0" * 1024)
    capped = probe("yodas2", yodas, 256 * 2**20)
    assert capped["reasons"] == {"video_too_large": 2}, capped
    assert capped["grow_mb"] < 48, capped
    rows.append(["Yodas2 tar.gz: one WAV of 1 GiB", f"{gz.stat().st_size / 2**20:.1f} MiB",
                 "each caption rejected video_too_large (cap set to 256 MiB; default 2 GiB)",
                 f"+{capped['grow_mb']:.0f} MiB", "not run (would hold 1 GiB)"])

    # Nemotron-CC: one JSON line of 1 GiB in a 32 kB zstd frame
    nem = tmp_path / "nemotron"
    folder = nem / BASE / "data-jsonl" / KEPT
    folder.mkdir(parents=True)
    cctx = zstandard.ZstdCompressor(level=3)
    with open(folder / "CC-MAIN-2024-10-part-00000.jsonl.zstd", "wb") as f:
        f.write(cctx.compress(record_line({"warc_record_id": "<urn:uuid:ok>", "text": "fine"}) + b"\n"))
        with cctx.stream_writer(f, closefd=False) as w:
            w.write(b'{"warc_record_id": "<urn:uuid:bomb>", "text": "')
            for _ in range(size // len(block)):
                w.write(block)
            w.write(b'"}\n')
    write_paths_file(nem, [f"{BASE}/data-jsonl/{KEPT}/CC-MAIN-2024-10-part-00000.jsonl.zstd"])
    capped = probe("nemotron", nem, 64 * 2**20)
    assert capped["reasons"] == {"item": 1, "line_too_long": 1}, capped
    assert capped["grow_mb"] < 64 + 32, capped  # a line is held up to --max-line-bytes before it is declared long
    zsize = (folder / "CC-MAIN-2024-10-part-00000.jsonl.zstd").stat().st_size
    rows.append(["Nemotron-CC: one JSON line of 1 GiB", f"{zsize / 2**10:.0f} KiB",
                 "reject line_too_long (--max-line-bytes 64 MiB: up to that much of a line is held)",
                 f"+{capped['grow_mb']:.0f} MiB",
                 "+1027 MiB before the fix (one decompress call returned the whole GiB; measured by hand, see below)"])
    publish("bombs", table(["bomb", "compressed / on disk", "outcome", "peak RSS growth of the task",
                            "without the cap"], rows))


# --- secrets --------------------------------------------------------------------------------------------------


class _Echo401(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def _answer(self) -> None:
        # A careless server (or proxy) that echoes the credentials it got: the worst case for error messages.
        auth = self.headers.get("Authorization", "")
        self.seen.append(auth)
        body = json.dumps({"error": f"Invalid credentials in Authorization header {auth!r}"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_HEAD = do_PUT = _answer

    def log_message(self, *args) -> None:
        pass


SECRETS_SCRIPT = r"""
import sys
from sodadata import cli
out, stage = sys.argv[1], sys.argv[2]
calls = [
    ["emilia", "--source", "hf://datasets/amphion/Emilia-Dataset", "--out", out + "-hub", "--codec", "tiny-random"],
    ["emilia", "--source", "hf://datasets/amphion/Emilia-Dataset@" + "0" * 40, "--out", out + "-hub2",
     "--codec", "tiny-random", "--serial"],
    ["push", out, "--repo", "someone/soda-test", "--dry-run", "--stage", stage, "--allow-random-codec"],
    ["push", out, "--repo", "someone/soda-test", "--stage", stage + "-real", "--allow-random-codec"],
]
for argv in calls:
    print("=== sodadata", " ".join(argv), flush=True)
    try:
        print("exit", cli.main(argv), flush=True)
    except SystemExit as exc:
        print("exit", exc.code, flush=True)
    except BaseException as exc:
        import traceback
        traceback.print_exc()
        print("exit crash", type(exc).__name__, flush=True)
"""


def all_text_under(root: Path) -> str:
    """Every output file as text: Parquet decoded (its bytes are compressed), everything else as bytes."""
    parts = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        if p.suffix == ".parquet":
            parts.append(json.dumps(pq.read_table(p).to_pylist(), ensure_ascii=False, default=str))
        else:
            parts.append(p.read_bytes().decode("utf-8", "replace"))
    return "\n".join(parts)


def test_a_hub_token_never_appears_in_any_output(tmp_path: Path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    caplog.set_level(logging.DEBUG)
    places: dict[str, str] = {}

    # 1. A recipe run with rejects, a failing shard, retries, tracebacks in the run summary.
    src, out = tmp_path / "src", tmp_path / "out"
    make_emilia_source(src, seed=2, quirks=True, tars_per_subset=2, docs_per_tar=1, utts_per_doc=2)
    bad = src / "Emilia/EN/EN-B000060.tar"
    bad.write_bytes(bad.read_bytes()[:4000])
    argv = ["--source", str(src), "--out", str(out), "--codec", "tiny-random", "--torch-threads", "1", "--serial",
            "--no-progress", "--retries", "1", "-v"]
    assert cli_recipe.main(EmiliaRecipe, argv, prog="emilia", description="") == 1

    # 1b. A recipe whose source errors quote the token (as an echoing server's would): in a reject's detail and
    #     in the exception that fails a shard, which the runner logs, retries and writes to the run summary.
    @dataclass(frozen=True)
    class Echoing(EmiliaRecipe):
        def read(self, task):
            yield Reject("echoed-1", "undecodable_audio", f"server said: Authorization: Bearer {FAKE_TOKEN}")
            if task.stem.endswith("0060"):
                raise OSError(f"401 from https://127.0.0.1/x: Invalid credentials 'Bearer {FAKE_TOKEN}'")

    echo_out = tmp_path / "out-echo"
    result = run_recipe(Echoing(source=str(src), subsets=("emilia",)),
                        PipelineConfig(out=str(echo_out), codec=CODEC), RunnerConfig(serial=True, retries=1,
                                                                                      progress=False))
    assert [f.task for f in result.failures] == ["emilia/en/EN-B000060"] and "<redacted>" in result.failures[0].error
    assert "<redacted>" in json.dumps(pq.read_table(echo_out / "emilia/en/rejects/EN-B000000.parquet").to_pylist())

    # 2. Source URLs that embed credentials: refused before anything is read or recorded.
    for flag, url in (("--source", f"https://user:{FAKE_TOKEN}@127.0.0.1:9/"),
                      ("--paths-file", f"https://127.0.0.1:9/data-jsonl.paths.gz?token={FAKE_TOKEN}")):
        rc = cli_recipe.main(NemotronCCRecipe, [flag, url, "--out", str(tmp_path / "out-nem"), "--serial"],
                             prog="nemotron-cc", description="")
        assert rc == 2
    captured = capsys.readouterr()
    assert "carries credentials" in captured.err and "***" in captured.err
    places["in-process stdout/stderr"] = captured.out + captured.err
    places["in-process logs"] = caplog.text + "\n".join(str(r.args) for r in caplog.records)

    # 3. Processes whose Hub requests carry the token, against a Hub that answers 401: the revision lookup,
    #    hf:// listing, `sodadata push --dry-run` (the card) and a real push.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo401)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_TOKEN": FAKE_TOKEN,
           "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}", "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "5"}
    stage = tmp_path / "stage"
    try:
        done = subprocess.run([sys.executable, "-c", SECRETS_SCRIPT, str(out), str(stage)], capture_output=True,
                              text=True, env=env, timeout=600)
    finally:
        server.shutdown()
    places["hub processes stdout/stderr"] = done.stdout + done.stderr
    (tmp_path / "hub-processes.log").write_text(done.stdout + done.stderr)
    exits = re.findall(r"^exit (.*)$", done.stdout, re.M)
    assert len(exits) == 4 and "crash" not in " ".join(exits), done.stdout + done.stderr[-3000:]
    assert exits[0] == "2" and exits[2] == "0" and exits[3] != "0", exits
    assert any(FAKE_TOKEN in h for h in _Echo401.seen), "the fake Hub never saw the token: the test proves nothing"
    assert (stage / "README.md").exists(), "push --dry-run wrote no card"
    for root in (out, echo_out, tmp_path / "out-nem", stage, tmp_path / "stage-real", tmp_path / "out-hub", tmp_path / "out-hub2"):
        if root.exists():
            places[f"files under {root.name}/"] = all_text_under(root)
    leaks = [where for where, text in places.items() if FAKE_TOKEN in text or FAKE_TOKEN[3:20] in text]
    assert not leaks, f"the token appears in: {leaks}"
    checked = {where: len(text) for where, text in places.items()}
    publish("secrets", table(["where", "characters searched", "fake token found"],
                             [[w, n, "no"] for w, n in checked.items()])
            + f"\n\nThe fake Hub saw the token in {sum(FAKE_TOKEN in h for h in _Echo401.seen)} requests (so it was "
            "in use); exits: revision lookup 401 -> 2, hf:// listing 401 -> " + exits[1] + ", push --dry-run -> 0, "
            "push -> " + exits[3] + ".")

