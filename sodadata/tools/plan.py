"""``sodadata plan RECIPE``: what a training run of T tokens needs from each component of a mixture recipe.

    sodadata plan recipes/soda.yaml --tokens 500B
    sodadata plan recipes/soda.yaml --flops 1.2e22 --params 4e9 --json      # T = C / 6N
    sodadata plan recipes/soda.yaml --tokens 500B --codebooks 1 --formats audio_only

Per component (weights from the recipe, parsed by ``sodadata.mix.mixture``; sizes from the catalogs' ``sizes``):

- ``tokens``: T x weight (weights are shares of tokens, SPEC §4).
- ``unique_tokens``: what the corpus gives once. Speech: hours x tokens per hour, summed over the speech formats
  (each format is a row of its own holding the whole document, so every hour counts once per format): audio
  tokens per hour = 3600 x 12.5 x codebooks; text tokens per hour (transcript, markers, BOS/EOS) =
  :data:`TEXT_TOKENS_PER_HOUR` in the two interleaved formats, none in ``audio_only``. Text: the catalog's tokens.
- ``epochs`` = tokens / unique tokens: passes over the component's rows. ``audio_epochs`` = epochs x speech
  formats: how many times each hour of audio is trained on (what SODA calls its ~4 epochs: about 2 passes over
  rows in two formats).
- ``audio_hours``: hours to encode, min(catalog hours, what the tokens need); ``cpu_core_hours`` and
  ``gpu_hours`` at :data:`CPU_AUDIO_HOURS_PER_CORE_HOUR` / :data:`GPU_AUDIO_HOURS_PER_GPU_HOUR` (``--rate``,
  ``--gpu-rate``); ``disk_bytes`` for the shards of what is prepared.

Every constant below says where its figure comes from; tests/test_plan.py checks the BENCHMARKS.md ones against
that file and the totals against SODA's published figures.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import asdict, dataclass

from sodadata.encode.codes import FRAME_RATE_HZ, NUM_CODEBOOKS, parse_codebooks
from sodadata.tools.stats_numbers import CHARS_PER_TEXT_TOKEN
from sodadata.write import document
from sodadata.write.document import AUDIO_ONLY, DEFAULT_FORMATS, SPEECH_FORMATS

# Text tokens per audio-hour in one interleaved row (transcript + the four markers per utterance + BOS/EOS), measured
# by SODA on its own data with its tokenizer: its three speech corpora make 131B + 73B + 37B = 241B tokens in both
# formats with 8 codebooks (SPEC §4) from 164,000 + 92,000 + 46,800 h (catalogs), so one format holds
# 241e9 / 2 / 302,800 h = 397,952 tokens an hour, of which 360,000 are audio: 37,952 (~10.5 a second). That is
# about twice what a 150 words-a-minute transcript with 4 markers per few-second utterance gives (~5 a second);
# SODA's figure is used because it is the only one measured on the real corpora. Override with
# --text-tokens-per-hour.
TEXT_TOKENS_PER_HOUR = 38_000
# Mimi encoding throughput on CPU, audio-hours per core-hour (= x real time per core): BENCHMARKS.md, section
# "End to end: Emilia recipe ..." (bench/pipeline.py), row "2 workers x 1 torch thread", x real time per core by the
# workers' CPU time (the real Mimi architecture, random weights; an AMD EPYC core with AVX-512).
CPU_AUDIO_HOURS_PER_CORE_HOUR = 18.6
# On a GPU: not measured yet (BENCHMARKS.md has no gpu section; bench/gpu.py writes it where a GPU is lent). Issue 8's
# goal is 10,000 audio-hours per H100-hour, a target, not a measurement: pass --gpu-rate to plan with a figure.
GPU_AUDIO_HOURS_PER_GPU_HOUR: float | None = None
# Parquet bytes per audio token (zstd, both formats of each document in the file, text included): BENCHMARKS.md,
# section "The small things ..." (bench/codes.py), a task's write phase, 1 h row: 234 bytes per audio-second over
# 2 x 100 audio tokens a second. Random codes compress worse than real ones: an upper bound.
PARQUET_BYTES_PER_AUDIO_TOKEN = 234 / 200
# Bytes per text token of a text-only component: UTF-8 at stats.py's CHARS_PER_TEXT_TOKEN characters a token (English
# is one byte a character), without compression: an upper bound (zstd makes web text several times smaller).
BYTES_PER_TEXT_TOKEN = CHARS_PER_TEXT_TOKEN

_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}
_NUMBER_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMBGT]?)\s*$", re.IGNORECASE)


class PlanError(ValueError):
    """A planning input the user can fix (a component no catalog sizes, a bad number)."""


def parse_amount(text: str) -> float:
    """``500e9``, ``500B``, ``1.2T``, ``4e9``: a positive number, with an optional K/M/B(G)/T suffix."""
    m = _NUMBER_RE.match(str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"expected a number such as 500e9 or 500B, got {text!r}")
    value = float(m[1]) * _SUFFIX[m[2].upper()]
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def parse_count(text: str) -> float:
    """Like :func:`parse_amount`, zero allowed."""
    return 0.0 if re.match(r"^\s*0*\.?0+\s*$", str(text)) else parse_amount(text)


def parse_formats(text: str) -> tuple[str, ...]:
    """``--formats`` as the recipes read it (:func:`sodadata.write.document.parse_formats`), for argparse."""
    try:
        return document.parse_formats(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--formats {text!r}: ")) from None


def _codebooks(text: str) -> int:
    """``--codebooks`` as the recipes read it (:func:`sodadata.encode.codes.parse_codebooks`), for argparse."""
    try:
        return parse_codebooks(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--codebooks ")) from None


@dataclass(frozen=True)
class Rates:
    codebooks: int = NUM_CODEBOOKS
    formats: tuple[str, ...] = DEFAULT_FORMATS
    text_tokens_per_hour: float = TEXT_TOKENS_PER_HOUR
    cpu_audio_hours_per_core_hour: float = CPU_AUDIO_HOURS_PER_CORE_HOUR
    gpu_audio_hours_per_gpu_hour: float | None = GPU_AUDIO_HOURS_PER_GPU_HOUR

    @property
    def audio_tokens_per_hour(self) -> float:
        return 3600 * FRAME_RATE_HZ * self.codebooks

    def speech_tokens_per_hour(self) -> tuple[float, float]:
        """(audio, text) tokens one audio-hour gives over all the chosen formats."""
        text_formats = sum(f != AUDIO_ONLY for f in self.formats)
        return self.audio_tokens_per_hour * len(self.formats), self.text_tokens_per_hour * text_formats


@dataclass
class ComponentPlan:
    name: str
    weight: float  # normalized share of tokens
    kind: str  # "speech" or "text"
    tokens: float  # tokens this run trains on
    unique_tokens: float  # tokens the corpus gives once (speech: in all the chosen formats)
    epochs: float  # tokens / unique_tokens: passes over the component's rows
    audio_epochs: float | None  # times each audio-hour is trained on (epochs x speech formats); None for text
    catalog_hours: float | None  # audio hours the catalog gives the corpus; None for text
    audio_hours: float  # hours to encode: the catalog's, or fewer when the run needs less than one epoch
    cpu_core_hours: float
    gpu_hours: float | None  # None: no GPU throughput measured (or given)
    disk_bytes: float  # the shards of what is prepared


def plan_component(name: str, weight: float, tokens: float, size: dict, rates: Rates) -> ComponentPlan:
    if "hours" in size:
        hours = float(size["hours"])
        audio_per_hour, text_per_hour = rates.speech_tokens_per_hour()
        unique = hours * (audio_per_hour + text_per_hour)
        epochs = tokens / unique
        audio_hours = hours * min(1.0, epochs)
        gpu = rates.gpu_audio_hours_per_gpu_hour
        return ComponentPlan(
            name, weight, "speech", tokens, unique, epochs, epochs * len(rates.formats), hours, audio_hours,
            audio_hours / rates.cpu_audio_hours_per_core_hour, audio_hours / gpu if gpu else None,
            # the audio bytes per token were measured with text in the rows: text is not added a second time
            audio_hours * audio_per_hour * PARQUET_BYTES_PER_AUDIO_TOKEN,
        )
    unique = float(size["tokens"])
    epochs = tokens / unique
    # nothing to encode: no CPU or GPU time for a text component
    return ComponentPlan(name, weight, "text", tokens, unique, epochs, None, None, 0.0, 0.0, 0.0,
                         min(tokens, unique) * BYTES_PER_TEXT_TOKEN)


def component_size(name: str, path: str, sizes: dict[str, dict], hours: dict[str, float]) -> dict:
    """A component's size: ``--hours NAME=H``, else the catalog entry named like it or like the end of its path."""
    if name in hours:
        return {"hours": hours[name]}
    if name in sizes:
        return sizes[name]
    stripped = path.rstrip("/")
    for key, size in sizes.items():
        if stripped == key or stripped.endswith("/" + key) or f"/{key}/" in stripped:
            return size
    raise PlanError(f"component {name!r} (path {path}): no catalog gives its size (a 'sizes' entry in "
                    f"sodadata/catalogs/*.yaml); give its audio hours with --hours '{name}=HOURS'")


def plan(recipe: str, tokens: float, rates: Rates, hours: dict[str, float] | None = None) -> dict:
    """The whole plan as a JSON-ready dict: top-level ``tokens``, ``components`` (one :class:`ComponentPlan` each)
    and ``total``."""
    from sodadata.mix.mixture import MixtureConfig
    from sodadata.read.catalog import component_sizes

    config = MixtureConfig.load(recipe)
    hours = dict(hours or {})
    unknown = sorted(set(hours) - set(config.names))
    if unknown:
        raise PlanError(f"--hours names {unknown}, not components of {config.source} ({', '.join(config.names)})")
    sizes = component_sizes()
    comps = [
        plan_component(c.name, w, tokens * w, component_size(c.name, c.path, sizes, hours), rates)
        for c, w in zip(config.components, config.weights(), strict=True)
    ]
    gpu = [c.gpu_hours for c in comps]
    return {
        "recipe": config.source,
        "tokens": tokens,
        "codebooks": rates.codebooks,
        "formats": list(rates.formats),
        "rates": {
            "audio_tokens_per_hour": rates.audio_tokens_per_hour,
            "text_tokens_per_hour": rates.text_tokens_per_hour,
            "cpu_audio_hours_per_core_hour": rates.cpu_audio_hours_per_core_hour,
            "gpu_audio_hours_per_gpu_hour": rates.gpu_audio_hours_per_gpu_hour,
            "parquet_bytes_per_audio_token": PARQUET_BYTES_PER_AUDIO_TOKEN,
            "bytes_per_text_token": BYTES_PER_TEXT_TOKEN,
        },
        "components": [asdict(c) for c in comps],
        "total": {
            "tokens": sum(c.tokens for c in comps),
            "unique_tokens": sum(c.unique_tokens for c in comps),
            "audio_hours": sum(c.audio_hours for c in comps),
            "cpu_core_hours": sum(c.cpu_core_hours for c in comps),
            "gpu_hours": None if None in gpu else sum(gpu),
            "disk_bytes": sum(c.disk_bytes for c in comps),
        },
    }


def _si(x: float) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}"


def _bytes(x: float) -> str:
    for div, unit in ((1e15, "PB"), (1e12, "TB"), (1e9, "GB"), (1e6, "MB")):
        if x >= div:
            return f"{x / div:.1f} {unit}"
    return f"{x / 1e3:.1f} kB"


def format_table(result: dict) -> str:
    """The plan as a Markdown table (what ``sodadata plan`` prints without ``--json``)."""
    header = ["component", "weight", "tokens", "unique tokens", "epochs", "audio epochs", "audio hours",
              "CPU core-hours", "GPU-hours", "disk"]

    def row(name, c, weight):
        audio_epochs = c.get("audio_epochs")
        return [name, weight, _si(c["tokens"]), _si(c["unique_tokens"]),
                f"{c['epochs']:.2f}" if "epochs" in c else "",
                f"{audio_epochs:.2f}" if audio_epochs is not None else "",
                f"{c['audio_hours']:,.0f}", f"{c['cpu_core_hours']:,.0f}",
                "unmeasured" if c["gpu_hours"] is None else f"{c['gpu_hours']:,.0f}", _bytes(c["disk_bytes"])]

    rows = [row(c["name"], c, f"{c['weight']:.4f}") for c in result["components"]]
    rows.append(row("**total**", result["total"], "1"))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |" for r in [header, *rows]]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    r = result["rates"]
    gpu = (f"{r['gpu_audio_hours_per_gpu_hour']:,.0f} audio-hours per GPU-hour" if r["gpu_audio_hours_per_gpu_hour"]
           else "GPU throughput unmeasured (BENCHMARKS.md has no GPU figure; --gpu-rate gives one)")
    notes = [
        f"{result['recipe']}: {_si(result['tokens'])} tokens; {result['codebooks']} codebooks "
        f"({r['audio_tokens_per_hour']:,.0f} audio tokens per hour and format), formats {', '.join(result['formats'])}, "
        f"{r['text_tokens_per_hour']:,.0f} text tokens per hour in an interleaved format.",
        f"Encoding: {r['cpu_audio_hours_per_core_hour']} audio-hours per CPU core-hour; {gpu}. Disk: "
        f"{r['parquet_bytes_per_audio_token']:.2f} bytes per audio token (measured, random codes: an upper bound), "
        f"{r['bytes_per_text_token']} per text token (uncompressed).",
        "epochs: passes over the component's rows; audio epochs: times each audio-hour is trained on "
        "(epochs x speech formats). Audio hours: what must be encoded (all of it from one epoch on).",
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(notes)


def _hours_arg(text: str) -> tuple[str, float]:
    name, eq, value = text.rpartition("=")
    if not eq or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=HOURS, got {text!r}")
    return name, parse_amount(value)


def build_parser() -> argparse.ArgumentParser:
    from sodadata.cli import OneLineParser

    p = OneLineParser(prog="sodadata plan", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="mixture recipe: a YAML file or a packaged mixture's name (soda)")
    p.add_argument("--tokens", type=parse_amount, metavar="T", help="training tokens (500e9 or 500B)")
    p.add_argument("--flops", type=parse_amount, metavar="C", help="training compute in FLOPs, with --params: T = C / 6N")
    p.add_argument("--params", type=parse_amount, metavar="N", help="model parameters, with --flops")
    p.add_argument("--codebooks", type=_codebooks, default=NUM_CODEBOOKS, help=f"Mimi codebooks per frame, 1-{NUM_CODEBOOKS} "
                   f"(default {NUM_CODEBOOKS}): 12.5 x N audio tokens a second")
    p.add_argument("--formats", type=parse_formats, default=DEFAULT_FORMATS,
                   help=f"speech row formats, a comma list of {', '.join(SPEECH_FORMATS)} (default "
                   f"{','.join(DEFAULT_FORMATS)}): each counts every hour once")
    p.add_argument("--text-tokens-per-hour", type=parse_count, default=TEXT_TOKENS_PER_HOUR,
                   help=f"text tokens per audio-hour in an interleaved format (default {TEXT_TOKENS_PER_HOUR:,}: "
                   "SODA's token counts, see sodadata/tools/plan.py)")
    p.add_argument("--rate", type=parse_amount, default=CPU_AUDIO_HOURS_PER_CORE_HOUR, metavar="X",
                   help=f"audio-hours encoded per CPU core-hour (default {CPU_AUDIO_HOURS_PER_CORE_HOUR}, BENCHMARKS.md)")
    p.add_argument("--gpu-rate", type=parse_amount, default=GPU_AUDIO_HOURS_PER_GPU_HOUR, metavar="Y",
                   help="audio-hours encoded per GPU-hour (default: none measured yet, GPU-hours not given)")
    p.add_argument("--hours", type=_hours_arg, action="append", default=[], metavar="NAME=HOURS",
                   help="audio hours of a component no catalog sizes (repeatable)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.tokens is None) == (args.flops is None):
        parser.error("give either --tokens T or --flops C with --params N")
    if (args.flops is None) != (args.params is None):
        parser.error("--flops and --params go together (T = C / 6N)")
    tokens = args.tokens if args.tokens is not None else args.flops / (6 * args.params)
    rates = Rates(codebooks=args.codebooks, formats=args.formats, text_tokens_per_hour=args.text_tokens_per_hour,
                  cpu_audio_hours_per_core_hour=args.rate, gpu_audio_hours_per_gpu_hour=args.gpu_rate)
    try:
        result = plan(args.recipe, tokens, rates, dict(args.hours))
    except (PlanError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.flops is not None:
        result["tokens_from"] = {"flops": args.flops, "params": args.params, "rule": "T = C / 6N"}
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
