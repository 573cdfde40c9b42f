"""``sodadata`` command line: one subcommand per module, imported only when used (fast ``--help``)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import NoReturn

# Corpus recipes: ``sodadata <corpus>`` is ``python -m sodadata.recipes.<corpus>`` (``-`` in a name is ``_`` in the
# module's); what each prepares.
_RECIPES: dict[str, str] = {
    "emilia": "Emilia / Emilia-YODAS (same as python -m sodadata.recipes.emilia)",
    "yodas2": "Yodas2",
    "mls": "Multilingual LibriSpeech English",
    "nemotron-cc": "Nemotron-CC (text only)",
    "librispeech": "a LibriSpeech split (SODA's validation set: dev-clean)",
}
# The tools: name -> (module, one-line help).
_TOOLS: dict[str, tuple[str, str]] = {
    "tokenizer": ("sodadata.mix.tokenizer", "build the extended tokenizer (markers + 16,384 audio tokens)"),
    "stats": ("sodadata.tools.stats", "per-component statistics table, Markdown and plots"),
    "push": ("sodadata.tools.hub", "publish an output directory to the Hugging Face Hub"),
    "validate": ("sodadata.tools.validate", "check every shard against the format contract"),
    "decode": ("sodadata.tools.decode", "decode one row back to audio"),
    "inspect": ("sodadata.tools.listening_report", "static HTML report: listen to sampled documents"),
    "plan": ("sodadata.tools.plan", "plan a run: tokens, epochs, audio hours, core-/GPU-hours and disk per component"),
    "export": ("sodadata.mix.export", "export a mixture recipe to another trainer's config (levanter)"),
}
# name -> (module, one-line help). Each module has ``main(argv: list[str] | None) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    **{name: (f"sodadata.recipes.{name.replace('-', '_')}", f"prepare {what}") for name, what in _RECIPES.items()},
    **_TOOLS,
}


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors on one line (exit 2): a recipe's usage synopsis runs to ten lines and buried them."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: sodadata <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'sodadata <command> --help' for the options of one command."]
    return "\n".join(lines)


def setup_logging(verbose: bool = False) -> None:
    if not verbose:
        # Dask's scheduler, nannies and workers log every connection at INFO, drowning the progress bar and the
        # summary; keep their warnings. Set before Dask is imported so worker processes inherit it too.
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        if "distributed" in sys.modules:
            logging.getLogger("distributed").setLevel(logging.WARNING)
        # huggingface_hub warns at every retry of a request ("Retrying in 1s [Retry 1/5]"), in every worker: a
        # user reads chatter about a flaky connection as faults. What finally fails is reported by the task
        # that met it; --verbose shows the retries. The variable reaches worker processes too.
        os.environ.setdefault("HF_HUB_VERBOSITY", "error")
        # The object stores' clients say at INFO where they found credentials and endpoints, once per client
        # (every worker, every run): what a user set on purpose, not news. Their warnings stay.
        for name in ("botocore", "aiobotocore", "s3fs", "gcsfs", "adlfs", "azure"):
            logging.getLogger(name).setLevel(logging.WARNING)
    # huggingface_hub logs through a handler of its own (added when it is imported) and to ours: every message came
    # twice. Imported now so that its handler can go; importing it reads HF_HUB_VERBOSITY for its level.
    imported_before = "huggingface_hub" in sys.modules
    import huggingface_hub.utils.logging  # noqa: F401

    hf_root = logging.getLogger("huggingface_hub")
    hf_root.handlers.clear()
    if verbose:
        hf_root.setLevel(logging.NOTSET)
    elif imported_before:
        hf_root.setLevel(logging.ERROR)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"sodadata: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
