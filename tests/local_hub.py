"""A local stand-in for the Hugging Face Hub's HTTP API, served inside the test process.

Why this and not a fake ``HfApi`` or an fsspec filesystem registered for ``hf://``: the round trip under test
crosses two pieces of code we do not own, ``HfApi`` (what ``sodadata push`` calls: create_repo, create_branch,
list_repo_tree, create_commit with README validation and the pre-upload negotiation) and ``HfFileSystem`` (what
``hf://datasets/ORG/NAME@REV`` resolves to for the mixture stream: revision resolution, tree listing with the
revision in the path, globbing, ranged reads of Parquet footers and row groups). A fake of either would test our
assumptions about them, not them. There is no local Hub server to run (and no network here), so this module
serves the Hub's REST endpoints those calls use from an in-memory store, and ``huggingface_hub.
set_client_factory`` routes the library's own HTTP client to it through an ``httpx`` mock transport: every line of
``HfApi`` and ``HfFileSystem`` runs as against the real Hub, only the server is ours.

Simplifications of the real server: every file is committed "regular" (inline in the commit, never LFS/Xet: the
pre-upload answer decides that, as the Hub's does for small files), revisions are branch names or commit ids
(no ``refs/pr/N``), no authentication, no pagination of tree listings.
"""

from __future__ import annotations

import base64
import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

import httpx2


def _origin(request: httpx2.Request) -> str:
    return f"{request.url.scheme}://{request.url.host}"  # the endpoint the library called (its URL checks want it)


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class Repo:
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit id
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit id -> the tree at that commit
    log: list[dict] = field(default_factory=list)  # commits in order: {"id", "branch", "message", "paths"}


class LocalHub:
    """The store and the request handler. ``repos["org/name"]`` is a dataset repository."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[str] = []  # "METHOD /path" of every request served

    # ------------------------------------------------------------------ store

    def tree(self, repo: str, revision: str = "main") -> dict[str, bytes]:
        r = self.repos[repo]
        return r.commits[r.branches.get(revision, revision)]

    def _commit(self, repo: str, branch: str, files: dict[str, bytes], message: str) -> str:
        r = self.repos[repo]
        digest = hashlib.sha1(json.dumps([message, len(r.log)]).encode())
        for path in sorted(files):
            digest.update(path.encode() + _blob_id(files[path]).encode())
        oid = digest.hexdigest()
        r.commits[oid] = files
        r.branches[branch] = oid
        r.log.append({"id": oid, "branch": branch, "message": message, "paths": sorted(files)})
        return oid

    def _resolve(self, repo: str, revision: str) -> tuple[str, dict[str, bytes]] | None:
        r = self.repos.get(repo)
        if r is None:
            return None
        oid = r.branches.get(revision, revision)
        return (oid, r.commits[oid]) if oid in r.commits else None

    @staticmethod
    def _entry(path: str, files: dict[str, bytes]) -> dict:
        if path in files:
            return {"type": "file", "path": path, "size": len(files[path]), "oid": _blob_id(files[path])}
        return {"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest()}

    def _listing(self, files: dict[str, bytes], under: str, recursive: bool) -> list[dict] | None:
        prefix = f"{under}/" if under else ""
        below = [p for p in files if p.startswith(prefix)]
        if under and not below:
            return None
        out: set[str] = set()
        for p in below:
            parts = p[len(prefix):].split("/")
            for i in range(1, len(parts) + 1 if recursive else 2):
                out.add(prefix + "/".join(parts[:i]))
        return [self._entry(p, files) for p in sorted(out)]

    # ------------------------------------------------------------------ HTTP

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        path = unquote(request.url.path)
        self.requests.append(f"{request.method} {path}")
        parts = path.strip("/").split("/")
        try:
            if path == "/api/repos/create":
                body = json.loads(request.content)
                repo = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
                if repo not in self.repos:
                    self.repos[repo] = Repo()
                    self._commit(repo, "main", {}, "initial commit")
                return httpx2.Response(200, json={"url": f"{_origin(request)}/datasets/{repo}", "name": repo})
            if path == "/api/validate-yaml":
                return httpx2.Response(200, json={"errors": [], "warnings": []})
            if parts[:2] == ["api", "datasets"] and len(parts) >= 5:
                return self._api(request, f"{parts[2]}/{parts[3]}", parts[4], parts[5:])
            if parts[0] == "datasets" and len(parts) >= 6 and parts[3] == "resolve":
                return self._resolve_file(request, f"{parts[1]}/{parts[2]}", parts[4], "/".join(parts[5:]))
        except KeyError as exc:
            return httpx2.Response(404, json={"error": f"not found: {exc}"}, headers={"x-error-code": "EntryNotFound"})
        return httpx2.Response(404, json={"error": f"the local hub does not serve {request.method} {path}"})

    def _api(self, request: httpx2.Request, repo: str, action: str, rest: list[str]) -> httpx2.Response:
        if repo not in self.repos:
            return httpx2.Response(404, json={"error": "Repository not found"},
                                   headers={"x-error-code": "RepoNotFound"})
        revision = rest[0] if rest else "main"
        if action == "branch":
            r = self.repos[repo]
            if revision in r.branches:
                return httpx2.Response(409, json={"error": "Reference already exists"})
            r.branches[revision] = r.branches["main"]
            return httpx2.Response(200, json={})
        resolved = self._resolve(repo, revision)
        if resolved is None:
            return httpx2.Response(404, json={"error": f"Invalid rev id: {revision}"},
                                   headers={"x-error-code": "RevisionNotFound"})
        oid, files = resolved
        if action == "revision":
            return httpx2.Response(200, json={"id": repo, "sha": oid, "private": False, "disabled": False,
                                              "siblings": [{"rfilename": p} for p in sorted(files)]})
        if action == "tree":
            query = parse_qs(request.url.query.decode() if isinstance(request.url.query, bytes) else
                             request.url.query)
            recursive = query.get("recursive", ["False"])[0].lower() == "true"
            listing = self._listing(files, "/".join(rest[1:]), recursive)
            if listing is None:
                return httpx2.Response(404, json={"error": "Entry not found"}, headers={"x-error-code": "EntryNotFound"})
            return httpx2.Response(200, json=listing)
        if action == "paths-info":
            asked = parse_qs(request.content.decode()).get("paths", [])
            return httpx2.Response(200, json=[self._entry(p, files) for p in asked
                                              if p in files or any(f.startswith(p + "/") for f in files)])
        if action == "preupload":
            asked = json.loads(request.content)["files"]
            return httpx2.Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular",
                                                         "shouldIgnore": False} for f in asked]})
        if action == "commit":
            branch = revision
            if branch not in self.repos[repo].branches:
                return httpx2.Response(404, json={"error": f"Invalid rev id: {branch}"},
                                       headers={"x-error-code": "RevisionNotFound"})
            new = dict(files)
            message = ""
            for line in request.content.splitlines():
                item = json.loads(line)
                value = item["value"]
                if item["key"] == "header":
                    message = value["summary"]
                elif item["key"] == "file":
                    new[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] == "deletedFile":
                    del new[value["path"]]
                else:
                    return httpx2.Response(400, json={"error": f"the local hub does not take {item['key']}"})
            commit = self._commit(repo, branch, new, message)
            return httpx2.Response(200, json={"commitUrl": f"{_origin(request)}/datasets/{repo}/commit/{commit}",
                                              "commitOid": commit})
        return httpx2.Response(404, json={"error": f"the local hub does not serve {action}"})

    def _resolve_file(self, request: httpx2.Request, repo: str, revision: str, path: str) -> httpx2.Response:
        resolved = self._resolve(repo, revision)
        if resolved is None or path not in resolved[1]:
            return httpx2.Response(404, json={"error": "Entry not found"}, headers={"x-error-code": "EntryNotFound"})
        oid, files = resolved
        data = files[path]
        headers = {"x-repo-commit": oid, "etag": f'"{_blob_id(data)}"', "accept-ranges": "bytes"}
        rng = request.headers.get("range")
        if request.method == "HEAD":
            return httpx2.Response(200, headers={**headers, "content-length": str(len(data))})
        if rng and rng.startswith("bytes="):
            start_s, _, end_s = rng[len("bytes="):].partition("-")
            start = int(start_s) if start_s else max(len(data) - int(end_s), 0)
            end = min(int(end_s), len(data) - 1) if end_s and start_s else len(data) - 1
            return httpx2.Response(206, content=data[start:end + 1],
                                   headers={**headers, "content-range": f"bytes {start}-{end}/{len(data)}"})
        return httpx2.Response(200, content=data, headers=headers)


@contextmanager
def serving(hub: LocalHub):
    """Route every HTTP request of ``huggingface_hub`` (HfApi, HfFileSystem) to ``hub`` while inside."""
    import fsspec
    from huggingface_hub.utils import _http

    previous = _http._GLOBAL_CLIENT_FACTORY
    _http.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub.handle),
                                                   follow_redirects=True))
    fsspec.AbstractFileSystem.clear_instance_cache()  # an HfFileSystem made before would hold a stale cache
    try:
        yield hub
    finally:
        _http.set_client_factory(previous)
        fsspec.AbstractFileSystem.clear_instance_cache()
