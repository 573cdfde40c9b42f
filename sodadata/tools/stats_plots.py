"""``sodadata stats`` plots: utterance and document durations per component, token share against the recipe."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from sodadata.locations import Location, is_remote
from sodadata.tools.stats_numbers import CHARS_PER_TEXT_TOKEN, CorpusStats

PLOTS = {
    "utterance": "utterance_durations.png",
    "document": "document_durations.png",
    "share": "token_share.png",
}


def _save_png(fig, path: Location) -> None:
    if not is_remote(path):
        fig.savefig(path, dpi=100)
        return
    buffer = io.BytesIO()  # matplotlib writes files and file objects, not URLs
    fig.savefig(buffer, format="png", dpi=100)
    path.write_bytes(buffer.getvalue())


def write_plots(stats: CorpusStats, output: Location) -> dict[str, Location]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt

    if not is_remote(output):
        output.mkdir(parents=True, exist_ok=True)
    speech = [c for c in stats.components if c.is_speech]
    paths = {}

    def histograms(kind: str, title: str, get, note) -> None:
        items = [(c, get(c)) for c in speech]
        items = [(c, v) for c, v in items if v is not None and v.size]
        n = max(len(items), 1)
        fig, axes = plt.subplots(n, 1, figsize=(7, 2.2 * n + 0.6), squeeze=False)
        for ax, (c, values) in zip(axes[:, 0], items):
            ax.hist(values, bins=_bins(values, log=kind == "document"), color="tab:blue")
            if kind == "document" and values.min() > 0 and values.max() / values.min() > 50:
                ax.set_xscale("log")
            ax.set_title(f"{c.component}: {values.size:,} {kind}s{note(c)}", fontsize=9)
            ax.set_xlabel("seconds")
            ax.set_ylabel("count")
        if not items:
            axes[0, 0].text(0.5, 0.5, f"no {kind} durations (no speech components, or not read)",
                            ha="center", va="center")
            axes[0, 0].set_axis_off()
        fig.suptitle(title)
        fig.tight_layout()
        path = output / PLOTS[kind]
        _save_png(fig, path)
        plt.close(fig)
        paths[kind] = path

    histograms("utterance", "Utterance durations (audio spans, rounded up to 80 ms frames)",
               lambda c: c.utterance_seconds,
               lambda c: f", text of {c.utterance_shards_read} of {c.shards} shards read")
    histograms("document", "Document durations", lambda c: c.document_seconds, lambda c: "")

    names = sorted(set(c.component for c in stats.components) | set(stats.weights))
    share = [stats.token_share(n) if n in stats.by_name() else 0.0 for n in names]
    weight = [stats.weights.get(n, 0.0) for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names)), 4))
    x = np.arange(len(names))
    ax.bar(x - 0.2, share, 0.4, label="share of tokens in this output")
    label = Path(stats.weights_source).name
    ax.bar(x + 0.2, weight, 0.4, label=f"recipe weight ({label})")
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("fraction of tokens")
    exact = "exact" if stats.text_tokens_exact else f"text tokens estimated at {CHARS_PER_TEXT_TOKEN} chars/token"
    ax.set_title(f"Token share per component ({exact})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths["share"] = output / PLOTS["share"]
    _save_png(fig, paths["share"])
    plt.close(fig)
    return paths


def _bins(values: np.ndarray, log: bool) -> np.ndarray | int:
    lo, hi = float(values.min()), float(values.max())
    if log and lo > 0 and hi / lo > 50:
        return np.geomspace(lo, hi, 41)
    return 40 if hi > lo else 1
