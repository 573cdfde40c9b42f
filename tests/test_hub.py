"""`sodadata push`: the staged folder (loaded with `datasets`), the card, the commit plan, retries, resume and
verification. The Hub is never called: a fake with HfApi's method signatures stands in for it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import httpx2
import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import CommitOperationAdd, CommitOperationDelete
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.hf_api import RepoFile, RepoFolder
from synthetic import SODA_LIKE, make_output_dir

from sodadata.tools import hub
from sodadata.tools.card import config_name
from sodadata.write.shards import ROW_SCHEMA

REPO = "org/soda-test"


def http_error(status: int, retry_after: str | None = None) -> HfHubHTTPError:
    headers = {"Retry-After": retry_after} if retry_after else {}
    response = httpx2.Response(status, headers=headers, request=httpx2.Request("POST", "https://hub.invalid/api"))
    return HfHubHTTPError(f"{status} error", response=response)


class FakeHub:
    """In-memory dataset repo with HfApi's signatures. ``fail`` maps a method name to exceptions to raise on its
    successive calls (None: succeed); ``drop`` paths are accepted by a commit but silently not stored."""

    LFS_FROM = 1024  # files at least this large are stored as LFS (sha256 reported), others as git blobs

    def __init__(self, fail: dict[str, list] | None = None, drop: tuple[str, ...] = ()) -> None:
        self.files: dict[str, bytes] = {".gitattributes": b"*.parquet filter=lfs\n"}
        self.fail = {k: list(v) for k, v in (fail or {}).items()}
        self.drop = drop
        self.commits: list[dict] = []
        self.calls: list[str] = []
        self.uploads: dict[str, int] = {}

    def _call(self, name: str) -> None:
        self.calls.append(name)
        queue = self.fail.get(name)
        if queue:
            exc = queue.pop(0)
            if exc is not None:
                raise exc

    def create_repo(self, repo_id, *, repo_type=None, private=None, exist_ok=False, **_):
        assert repo_id == REPO and repo_type == "dataset" and exist_ok
        self._call("create_repo")

    def create_branch(self, repo_id, *, branch, repo_type=None, exist_ok=False, **_):
        assert repo_type == "dataset" and exist_ok
        self._call("create_branch")

    def list_repo_tree(self, repo_id, path_in_repo=None, *, recursive=False, repo_type=None, revision=None, **_):
        assert recursive and repo_type == "dataset"
        self._call("list_repo_tree")
        entries, folders = [], set()
        for path, data in sorted(self.files.items()):
            parts = path.split("/")
            folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
            blob = hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()
            lfs = ({"size": len(data), "oid": hashlib.sha256(data).hexdigest(), "pointerSize": 130}
                   if len(data) >= self.LFS_FROM else None)
            entries.append(RepoFile(path=path, size=len(data), oid=blob, lfs=lfs))
        return iter([RepoFolder(path=f, oid="0" * 40) for f in sorted(folders)] + entries)

    def create_commit(self, repo_id, operations, *, commit_message, repo_type=None, revision=None, **_):
        assert repo_type == "dataset"
        self._call("create_commit")
        added, deleted = [], []
        for op in operations:
            if isinstance(op, CommitOperationAdd):
                self.uploads[op.path_in_repo] = self.uploads.get(op.path_in_repo, 0) + 1
                if op.path_in_repo not in self.drop:
                    self.files[op.path_in_repo] = Path(op.path_or_fileobj).read_bytes()
                added.append(op.path_in_repo)
            elif isinstance(op, CommitOperationDelete):
                self.files.pop(op.path_in_repo)
                deleted.append(op.path_in_repo)
        self.commits.append({"message": commit_message, "added": added, "deleted": deleted, "revision": revision})


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """One generated output with its stats computed once (push reuses them: same shards, same options)."""
    out = tmp_path_factory.mktemp("base") / "out"
    expected = make_output_dir(out, rejects_per_shard=3, seed=3)
    from sodadata.tools import stats

    assert stats.main([str(out), "--utterance-shards", "0"]) == 0
    return out, expected


@pytest.fixture
def out(base, tmp_path):
    src, expected = base
    dst = tmp_path / "out"
    shutil.copytree(src, dst)
    return dst, expected


def config(out: Path, **kw) -> hub.PushConfig:
    kw.setdefault("utterance_shards", 0)
    kw.setdefault("retry", hub.RetryPolicy(max_attempts=4, base_delay_s=1.0))
    return hub.PushConfig(out=out, repo=REPO, **kw)


def staged_paths(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def table_rows(readme: str, heading: str) -> dict[str, str]:
    """The rows of the table in the card's section ``heading``, by their first cell (a config name)."""
    section = readme.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return {line.split("|")[1].strip(" `"): line for line in section.splitlines() if line.startswith("| `")}


def front_matter(readme: str) -> dict:
    m = re.match(r"^---\n(.*?)\n---\n", readme, re.S)
    assert m, "README.md must start with YAML front matter"
    return yaml.safe_load(m.group(1))


# ---------------------------------------------------------------- staging, card, loading


def test_dry_run_stage_loads_with_datasets(out, tmp_path, monkeypatch):
    out, expected = out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.main([str(out), "--repo", REPO, "--dry-run", "--utterance-shards", "0"]) == 0
    root = out / "_hub" / "org--soda-test"
    import datasets

    for spec in SODA_LIKE:
        ds = datasets.load_dataset(str(root), config_name(spec.name), split="train", cache_dir=str(tmp_path / "c"))
        src = sorted((out / spec.name).glob("*.parquet"))
        source_ids = [i for p in src for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()]
        assert ds.num_rows == expected[spec.name]["rows"] == len(source_ids)
        assert ds.column_names == ROW_SCHEMA.names
        assert sorted(ds["id"]) == sorted(source_ids)
        assert set(ds["corpus"]) == {spec.name}
    # the text survives staging byte for byte (audio characters included)
    first = sorted((out / "yodas2" / "en").glob("*.parquet"))[0]
    staged = root / "data" / "yodas2" / "en" / first.name
    assert pq.read_table(staged).equals(pq.read_table(first))
    assert os.stat(staged).st_ino == os.stat(first).st_ino  # a hard link, not a copy


def test_card_yaml_names_every_config(out):
    out, expected = out
    staged = hub.stage(config(out))
    readme = (staged.root / "README.md").read_text()
    meta = front_matter(readme)
    configs = {c["config_name"]: c["data_files"] for c in meta["configs"]}
    assert set(configs) == {"yodas2_en", "emilia-yodas_en", "emilia_en", "nemotron-cc_hq-actual"}
    for spec in SODA_LIKE:
        files = configs[spec.name.replace("/", "_")]
        assert files == [{"split": "train", "path": f"data/{spec.name}/*.parquet"}]
    # the library's own card parser agrees
    from huggingface_hub import DatasetCard

    assert {c["config_name"] for c in DatasetCard(readme).data.to_dict()["configs"]} == set(configs)
    assert set(meta["license"]) == {"cc-by-nc-4.0", "cc-by-4.0", "cc-by-3.0", "other"}
    assert meta["license_link"] == "https://commoncrawl.org/terms-of-use"
    # per config: its licence on its own table row
    rows = table_rows(readme, "Configs, sources and licences")
    assert "CC-BY-NC-4.0" in rows["emilia_en"] and "CC-BY-4.0" in rows["emilia-yodas_en"]
    assert "CC-BY-3.0" in rows["yodas2_en"] and "Common Crawl" in rows["nemotron-cc_hq-actual"]
    assert f'load_dataset("{REPO}", ' in readme and "add_special_tokens=False" in readme
    assert "0xE000 + i * 2048 + c" in readme and "![Utterance durations](stats/utterance_durations.png)" in readme
    # records and rejects travel, outside every config's data_files
    for spec in SODA_LIKE:
        lines = (staged.root / "records" / spec.name / "records.jsonl").read_text().splitlines()
        assert len(lines) == spec.shards and {json.loads(x)["component"] for x in lines} == {spec.name}
        rejects = pq.read_table(staged.root / "rejects" / spec.name / "rejects.parquet")
        assert rejects.num_rows == 3 * spec.shards
        assert sum(expected[spec.name]["rejects"].values()) == rejects.num_rows
        assert set(rejects.column("shard").to_pylist()) == {f"shard-{s:05d}" for s in range(spec.shards)}
    for f in staged.files:
        loaded = any(re.fullmatch(g.replace("*", "[^/]*"), f.path_in_repo) for g in staged.globs.values())
        assert loaded == (f.kind == "data"), f.path_in_repo
    assert {p for p in staged_paths(staged.root) if p.startswith("stats/")} == {
        "stats/stats.md", "stats/stats.json", "stats/utterance_durations.png", "stats/document_durations.png",
        "stats/token_share.png"}


def test_licences_and_revisions_from_catalog_and_records(out, tmp_path):
    out, _ = out
    cat = tmp_path / "catalogs"
    cat.mkdir()
    (cat / "yodas2.yaml").write_text("corpus: yodas2\nrepo: espnet/yodas2\nrevision: main\nlicence: CC-BY-SA-4.0\n")
    (cat / "emilia.yaml").write_text(
        "corpus: emilia\nrepo: amphion/Emilia-Dataset\nrevision: main\nsubsets:\n"
        "  emilia: {component_prefix: emilia, licence: CC-BY-NC-4.0}\n"
        "  emilia-yodas: {component_prefix: emilia-yodas, licence: Some Custom Terms}\n")
    commit = "a" * 40
    for rec_path in (out / "emilia" / "en").glob("*.json"):
        rec = json.loads(rec_path.read_text())
        rec["source"]["revision"] = commit
        rec_path.write_text(json.dumps(rec))
    staged = hub.stage(config(out, catalog_dir=cat))
    readme = (staged.root / "README.md").read_text()
    rows = table_rows(readme, "Configs, sources and licences")
    assert "CC-BY-SA-4.0" in rows["yodas2_en"]  # the catalog wins over the built-in mapping
    assert "Some Custom Terms" in rows["emilia-yodas_en"]
    assert f"`{commit}`" in rows["emilia_en"]  # the revision the shards recorded
    assert "`main` (catalog" in rows["yodas2_en"]
    assert "cc-by-sa-4.0" in front_matter(readme)["license"]


def test_unfit_parquet_is_rewritten_for_the_hub(out):
    out, _ = out
    bad = out / "yodas2" / "en" / "shard-00000.parquet"
    table = pq.read_table(bad)
    pq.write_table(table, bad, row_group_size=table.num_rows, write_page_index=False, compression="snappy")
    assert hub.parquet_hub_problem(bad, 10**9) == "row group 0 has no page index"
    # A limit every shard meets (only the page index is missing); rewrites aim at half of it: several groups.
    groups = [pq.ParquetFile(p).metadata.row_group(i).total_byte_size for p in out.glob("*/*/*.parquet")
              for i in range(pq.ParquetFile(p).metadata.num_row_groups)]
    limit_mb = (max(groups) + 1) / 2**20
    staged = hub.stage(config(out, max_row_group_mb=limit_mb))
    dst = staged.root / "data" / "yodas2" / "en" / "shard-00000.parquet"
    assert staged.rewritten == ["data/yodas2/en/shard-00000.parquet"]
    assert os.stat(dst).st_ino != os.stat(bad).st_ino
    md = pq.ParquetFile(dst).metadata
    assert md.num_row_groups > 1
    assert hub.parquet_hub_problem(dst, int(limit_mb * 2**20)) is None  # page index on, groups bounded
    assert all(md.row_group(i).column(j).compression == "ZSTD"
               for i in range(md.num_row_groups) for j in range(md.num_columns))
    assert pq.read_table(dst).equals(table)
    other = staged.root / "data" / "yodas2" / "en" / "shard-00001.parquet"
    assert os.stat(other).st_ino == os.stat(out / "yodas2" / "en" / "shard-00001.parquet").st_ino
    # the next run reuses the rewritten copy while its source is unchanged, and redoes it when it changes
    before = os.stat(dst).st_mtime_ns
    hub.stage(config(out, max_row_group_mb=limit_mb))
    assert os.stat(dst).st_mtime_ns == before
    pq.write_table(table.slice(0, 2), bad, write_page_index=False)
    hub.stage(config(out, max_row_group_mb=limit_mb))
    assert pq.read_table(dst).equals(table.slice(0, 2))


def test_restaging_a_subset_removes_what_is_no_longer_pushed(out):
    out, _ = out
    root = hub.stage(config(out)).root
    assert (root / "data" / "yodas2" / "en").is_dir()
    staged = hub.stage(config(out, components=("emilia/en",)))
    assert staged_paths(root) == {f.path_in_repo for f in staged.files}
    assert not (root / "data" / "yodas2").exists() and not (root / "records" / "yodas2").exists()
    assert [c["config_name"] for c in front_matter((root / "README.md").read_text())["configs"]] == ["emilia_en"]


def test_many_shards_are_bucketed_and_still_load(out, tmp_path, monkeypatch):
    out, expected = out
    monkeypatch.setattr(hub, "FOLDER_ENTRY_LIMIT", 1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    staged = hub.stage(config(out, components=("emilia/en",)))
    data = sorted(f.path_in_repo for f in staged.files if f.kind == "data")
    assert len(data) == 2 and all(re.fullmatch(r"data/emilia/en/[0-9a-f]{2}/shard-0000[01]\.parquet", p) for p in data)
    assert front_matter((staged.root / "README.md").read_text())["configs"] == [
        {"config_name": "emilia_en", "data_files": [{"split": "train", "path": "data/emilia/en/*/*.parquet"}]}]
    import datasets

    ds = datasets.load_dataset(str(staged.root), "emilia_en", split="train", cache_dir=str(tmp_path / "c"))
    assert ds.num_rows == expected["emilia/en"]["rows"]


def test_stage_refuses_a_foreign_folder(out, tmp_path):
    out, _ = out
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("x")
    with pytest.raises(hub.PushError):
        hub.stage(config(out, stage_dir=foreign))
    assert (foreign / "precious.txt").exists()
    assert hub.main([str(out), "--repo", "not-a-repo-id", "--dry-run"]) == 2


def _edit_made_by(out: Path, component: str, edit, stems: tuple[str, ...] = ("shard-00000", "shard-00001")) -> None:
    for stem in stems:
        path = out / component / f"{stem}.json"
        rec = json.loads(path.read_text())
        rec["made_by"] = edit(rec["made_by"])
        path.write_text(json.dumps(rec))


def test_push_refuses_a_component_whose_shards_differ_in_made_by(out, caplog):
    out, _ = out
    _edit_made_by(out, "emilia/en", lambda m: {**m, "dtype": "bfloat16"}, stems=("shard-00001",))
    assert hub.main([str(out), "--repo", REPO, "--dry-run", "--utterance-shards", "0"]) == 2
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "refusing to push:\nemilia/en: shards differ in made_by: dtype: bfloat16 != float32 (2 kinds among 2 shards, "
        "e.g. shard-00001 and shard-00000): a config is one kind of data (rebuild the odd shards with the recipe's "
        "--redo-mismatched, or leave this component out with --component)"]
    assert not (out / hub.HUB_DIRNAME).exists()  # refused before anything was staged
    # the other components are fine to push on their own
    staged = hub.stage(config(out, components=("yodas2/en", "emilia-yodas/en")))
    assert {f.path_in_repo.split("/")[1] for f in staged.files if f.kind == "data"} == {"yodas2", "emilia-yodas"}


def test_the_card_states_what_made_each_config_from_the_records(out):
    out, _ = out
    sha = "c" * 64
    _edit_made_by(out, "emilia/en", lambda m: {**m, "codebooks": 4, "dtype": "bfloat16", "device": "cuda", "codec": {
        "id": "local", "revision": None, "weights_sha256": sha, "random": False}})
    readme = (hub.stage(config(out)).root / "README.md").read_text()
    rows = table_rows(readme, "How the audio was encoded")
    rev = "`0123456789abcdef0123456789abcdef01234567`"
    assert rows == {
        "yodas2_en": f"| `yodas2_en` | `kyutai/mimi` | {rev} | 8 | `float32` on cpu | `text_first`, `audio_first` |",
        "emilia-yodas_en": f"| `emilia-yodas_en` | `kyutai/mimi` | {rev} | 8 | `float32` on cpu | `text_first`, "
                           "`audio_first` |",
        "emilia_en": f"| `emilia_en` | a local Mimi (`save_pretrained` folder) | weights sha256 `{sha}` | 4 | "
                     "`bfloat16` on cuda | `text_first`, `audio_first` |",
        "nemotron-cc_hq-actual": "| `nemotron-cc_hq-actual` | none (text only) | - | - | - | `text` |",
    }
    # codebooks differ between configs: the decoding example does not pretend they are 8
    assert "keeping the first N of its codebooks (N per config in the table above)" in readme
    assert "N = 8  # this config's codebooks (table above)" in readme
    assert "WARNING: RANDOM CODEC" not in readme


# ---------------------------------------------------------------- commit plan and retry policy


def _files(tmp_path: Path, spec: dict[str, int]) -> list[hub.StagedFile]:
    files = []
    for rel, size in spec.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
        kind = "card" if rel == "README.md" else rel.split("/")[0]
        files.append(hub.StagedFile(rel, p, size, kind))
    return files


def test_commit_plan_batches_and_order(tmp_path):
    spec = {f"data/c/en/shard-{i:05d}.parquet": 10 for i in range(250)}
    spec |= {"records/c/en/records.jsonl": 5, "rejects/c/en/rejects.parquet": 5, "stats/stats.md": 5,
             "stats/a.png": 5, "README.md": 5}
    files = _files(tmp_path, spec)
    plan = hub.plan_commits(files, {}, hub.CommitConfig(files_per_commit=100))
    assert [len(c.files) for c in plan] == [100, 100, 50, 2, 3]
    assert [c.files[0].kind for c in plan] == ["data", "data", "data", "records", "stats"]
    assert plan[-1].files[-1].path_in_repo == "README.md"  # the card goes last, with its stats
    planned = [f.path_in_repo for c in plan for f in c.files]
    assert sorted(planned) == sorted(spec) and len(planned) == len(set(planned))
    assert [f.path_in_repo for f in plan[0].files] == sorted(p for p in spec if p.startswith("data/"))[:100]
    # bytes bound the commits as well: 10-byte files, 35 bytes per commit -> 3 per commit
    by_bytes = hub.plan_commits(files[:7], {}, hub.CommitConfig(files_per_commit=100, bytes_per_commit=35))
    assert [len(c.files) for c in by_bytes] == [3, 3, 1]
    # a file larger than the byte bound still gets (its own) commit
    big = _files(tmp_path / "big", {"data/c/en/huge.parquet": 100, "data/c/en/small.parquet": 1})
    assert [len(c.files) for c in hub.plan_commits(big, {}, hub.CommitConfig(bytes_per_commit=50))] == [1, 1]


def test_plan_uploads_only_what_is_missing_or_changed(tmp_path):
    files = _files(tmp_path, {"data/c/en/a.parquet": 2000, "data/c/en/b.parquet": 2000,
                              "data/c/en/c.parquet": 2000, "README.md": 100})
    a, b, c, card = files
    sha = lambda f: f.sha256()  # noqa: E731
    remote = {
        a.path_in_repo: hub.RemoteFile(a.path_in_repo, a.size, sha(a)),  # identical
        b.path_in_repo: hub.RemoteFile(b.path_in_repo, b.size - 1, "0" * 64),  # other size
        card.path_in_repo: hub.RemoteFile(card.path_in_repo, card.size, None, "f" * 40),  # same size, other blob
    }
    planned = [f.path_in_repo for cm in hub.plan_commits(files, remote) for f in cm.files]
    assert planned == [b.path_in_repo, c.path_in_repo, "README.md"]
    remote[card.path_in_repo] = hub.RemoteFile(card.path_in_repo, card.size, None, card.git_sha1())
    assert "README.md" not in [f.path_in_repo for cm in hub.plan_commits(files, remote) for f in cm.files]
    # a large file of the same size is trusted by size unless --checksum (hashing is a full read)
    monkey_remote = {a.path_in_repo: hub.RemoteFile(a.path_in_repo, a.size, "0" * 64)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hub, "HASH_SMALL_FILES_BYTES", 100)
        assert hub.up_to_date(a, monkey_remote[a.path_in_repo]) is True
        assert hub.up_to_date(a, monkey_remote[a.path_in_repo], checksum=True) is False


def test_retry_policy():
    policy = hub.RetryPolicy(max_attempts=8, base_delay_s=2.0, multiplier=2.0, max_delay_s=30.0)
    assert [policy.delay(k) for k in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert policy.delay(1, http_error(429, retry_after="17")) == 17.0  # the server's Retry-After wins
    assert policy.delay(1, http_error(429, retry_after="600")) == 30.0  # ... capped
    for status in (429, 500, 502, 503, 504):
        assert policy.is_retryable(http_error(status))
    for status in (400, 401, 403, 404, 409, 412):
        assert not policy.is_retryable(http_error(status))
    assert policy.is_retryable(ConnectionError("reset")) and policy.is_retryable(TimeoutError())
    assert policy.is_retryable(httpx2.ConnectError("refused"))
    assert not policy.is_retryable(ValueError("bad input"))

    sleeps: list[float] = []
    calls = iter([http_error(503), http_error(429, retry_after="5"), "done"])

    def flaky():
        x = next(calls)
        if isinstance(x, Exception):
            raise x
        return x

    assert hub.call_with_retries(flaky, policy, "thing", sleeps.append) == "done"
    assert sleeps == [2.0, 5.0]
    with pytest.raises(HfHubHTTPError):  # not retried: a 403 will not get better
        hub.call_with_retries(lambda: (_ for _ in ()).throw(http_error(403)), policy, "x", sleeps.append)
    assert sleeps == [2.0, 5.0]
    always = hub.RetryPolicy(max_attempts=3, base_delay_s=1.0)
    with pytest.raises(HfHubHTTPError):  # gives up after max_attempts
        hub.call_with_retries(lambda: (_ for _ in ()).throw(http_error(500)), always, "x", sleeps.append)
    assert sleeps[2:] == [1.0, 2.0]


# ---------------------------------------------------------------- push against the fake Hub


def test_push_uploads_exactly_the_staged_folder_and_verifies(out):
    out, _ = out
    fake = FakeHub(fail={"create_commit": [http_error(503), None, http_error(429, retry_after="3")],
                         "list_repo_tree": [http_error(502)]})
    sleeps: list[float] = []
    cfg = config(out, revision="v1", commits=hub.CommitConfig(files_per_commit=4))
    assert hub.push(cfg, api=fake, sleep=sleeps.append) == 0
    root = cfg.stage
    assert set(fake.files) - {".gitattributes"} == staged_paths(root)
    for rel in staged_paths(root):
        assert fake.files[rel] == (root / rel).read_bytes()
    assert sleeps == [1.0, 1.0, 3.0]  # list 502, commit 503, commit 429 with Retry-After: 3
    assert all(c["revision"] == "v1" for c in fake.commits) and "create_branch" in fake.calls
    assert all(len(c["added"]) <= 4 for c in fake.commits) and len(fake.commits) > 1
    assert fake.commits[-1]["added"][-1] == "README.md"
    kinds = [c["added"][0].split("/")[0] for c in fake.commits]
    assert kinds == sorted(kinds, key=lambda k: {"data": 0, "records": 1, "rejects": 1}.get(k, 2))
    # a rerun finds everything there: no commit at all
    n = len(fake.commits)
    assert hub.push(cfg, api=fake, sleep=sleeps.append) == 0
    assert len(fake.commits) == n


def test_interrupted_push_resumes_with_only_the_missing_files(out):
    out, _ = out
    cfg = config(out, commits=hub.CommitConfig(files_per_commit=3), retry=hub.RetryPolicy(max_attempts=2))
    broken = [None, None] + [http_error(500)] * 10  # two commits succeed, then the Hub stays down
    fake = FakeHub(fail={"create_commit": broken})
    with pytest.raises(HfHubHTTPError):
        hub.push(cfg, api=fake, sleep=lambda s: None)
    first = {p for c in fake.commits for p in c["added"]}
    assert len(first) == 6 and "README.md" not in fake.files
    fake.fail = {}
    assert hub.push(cfg, api=fake, sleep=lambda s: None) == 0
    second = [p for c in fake.commits[2:] for p in c["added"]]
    assert not first & set(second)  # nothing uploaded twice
    assert set(fake.uploads.values()) == {1}
    assert set(fake.files) - {".gitattributes"} == staged_paths(cfg.stage)


def test_verification_catches_missing_and_stale_files(out):
    out, _ = out
    cfg = config(out)
    lost = "data/emilia/en/shard-00001.parquet"
    fake = FakeHub(drop=(lost,))
    assert hub.push(cfg, api=fake, sleep=lambda s: None) == 1  # the Hub "accepted" it but does not have it

    fake = FakeHub()
    fake.files["data/emilia/en/old-shard.parquet"] = b"stale" * 10  # would be loaded by emilia_en
    fake.files["data/mls/en/x.parquet"] = b"other component"  # loaded by no config of this card
    assert hub.push(cfg, api=fake, sleep=lambda s: None) == 1
    result = hub.verify(hub.stage(cfg).files, hub.list_remote(fake, REPO, None, cfg.retry),
                        list(hub.stage(cfg).globs.values()))
    assert result.extra_loaded == ["data/emilia/en/old-shard.parquet"]
    assert result.extra_other == ["data/mls/en/x.parquet"] and not result.missing and not result.different
    assert hub.push(config(out, prune=True), api=fake, sleep=lambda s: None) == 0
    assert "data/emilia/en/old-shard.parquet" not in fake.files and "data/mls/en/x.parquet" not in fake.files
    assert any(c["deleted"] for c in fake.commits)

    fake.files["data/yodas2/en/shard-00000.parquet"] = b"truncated"
    assert hub.push(cfg, api=fake, sleep=lambda s: None) == 0  # a rerun repairs a file of another size
    assert fake.files["data/yodas2/en/shard-00000.parquet"] == (cfg.stage / "data/yodas2/en/shard-00000.parquet").read_bytes()


class FolderUploadHub(FakeHub):
    """huggingface_hub 2.x: upload_folder is the resumable multi-commit upload (no upload_large_folder)."""

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, revision=None, commit_message=None, **_):
        self._call("upload_folder")
        root = Path(folder_path)
        ops = [CommitOperationAdd(p.relative_to(root).as_posix(), str(p)) for p in sorted(root.rglob("*"))
               if p.is_file() and ".cache" not in p.relative_to(root).parts]
        self.create_commit(repo_id, ops, commit_message=commit_message, repo_type=repo_type, revision=revision)


class LargeFolderHub(FolderUploadHub):
    """huggingface_hub 0.25-1.x: upload_large_folder exists and is preferred."""

    def upload_large_folder(self, *, repo_id, folder_path, repo_type=None, revision=None, private=None, **_):
        self._call("upload_large_folder")
        self.upload_folder(repo_id=repo_id, folder_path=folder_path, repo_type=repo_type, revision=revision,
                           commit_message="large folder")


@pytest.mark.parametrize("api_cls, method", [(FolderUploadHub, "upload_folder"),
                                             (LargeFolderHub, "upload_large_folder")])
def test_library_method_uses_the_libraries_folder_upload(out, api_cls, method):
    out, _ = out
    fake = api_cls(fail={method: [http_error(504)]})
    sleeps: list[float] = []
    cfg = config(out, method="library")
    assert hub.push(cfg, api=fake, sleep=sleeps.append) == 0
    assert fake.calls.count(method) == 2 and sleeps == [1.0]  # retried once after the 504
    assert set(fake.files) - {".gitattributes"} == staged_paths(cfg.stage)


def test_main_reports_a_refused_token_in_one_line(out, monkeypatch, caplog):
    out, _ = out
    import huggingface_hub

    fake = FakeHub(fail={"create_repo": [http_error(403)]})
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: fake)
    assert hub.main([str(out), "--repo", REPO, "--utterance-shards", "0"]) == 1
    assert fake.calls == ["create_repo"]  # a 403 is not retried
    assert "HTTP 403" in caplog.text and "token that can write" in caplog.text


def test_stats_are_reused_only_for_the_same_shards(out):
    out, _ = out
    from sodadata.tools.stats import read_report

    cached = read_report(out / "_stats")
    staged = hub.stage(config(out))
    assert staged.stats.fingerprint == cached.fingerprint  # computed once by `sodadata stats`, reused here
    make_output_dir(out, components=SODA_LIKE[2:3], seed=99)  # the emilia shards are rewritten: new content
    restaged = hub.stage(config(out))
    assert restaged.stats.fingerprint != cached.fingerprint
    emilia = restaged.stats.by_name()["emilia/en"]
    rows = sum(pq.read_metadata(p).num_rows for p in (out / "emilia" / "en").glob("*.parquet"))
    assert emilia.rows == rows
    assert json.loads((restaged.root / "stats" / "stats.json").read_text())["fingerprint"] == restaged.stats.fingerprint


def test_the_calls_match_the_installed_huggingface_hub():
    """The fake accepts what push sends; this checks the real HfApi accepts it too (names of the arguments)."""
    import inspect

    from huggingface_hub import HfApi

    used = {
        "create_repo": {"repo_type", "private", "exist_ok"},
        "create_branch": {"branch", "repo_type", "exist_ok"},
        "list_repo_tree": {"recursive", "repo_type", "revision"},
        "create_commit": {"operations", "commit_message", "repo_type", "revision"},
        "upload_folder": {"repo_id", "folder_path", "repo_type", "revision", "commit_message"},
    }
    for name, kwargs in used.items():
        params = set(inspect.signature(getattr(HfApi, name)).parameters)
        assert kwargs <= params, (name, kwargs - params)
    if hasattr(HfApi, "upload_large_folder"):
        params = set(inspect.signature(HfApi.upload_large_folder).parameters)
        assert {"repo_id", "folder_path", "repo_type", "revision", "private"} <= params
    assert {"size", "lfs", "blob_id", "path"} <= set(RepoFile.__annotations__)
