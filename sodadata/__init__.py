"""sodadata: public speech corpora -> interleaved text + Mimi-token training data (SODA format)."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

from sodadata.encode.codes import chars_to_codes, check_audio_span, codes_to_chars

__version__ = "0.1.0"

__all__ = [
    "MixtureConfig",
    "MixtureStream",
    "__version__",
    "audio_to_str",
    "audio_to_string",
    "chars_to_codes",
    "check_audio_span",
    "codes_to_chars",
    "str_to_audio",
    "string_to_audio",
]

# The names the docs show users, loaded on first use: `import sodadata` stays free of torch and the mixture code.
_LAZY = {
    "audio_to_string": "sodadata.tools.decode",
    "string_to_audio": "sodadata.tools.decode",
    "audio_to_str": "sodadata.tools.decode",
    "str_to_audio": "sodadata.tools.decode",
    "MixtureConfig": "sodadata.mix.mixture",
    "MixtureStream": "sodadata.mix.packing",
}

# Old module name (sodadata.<name>) -> the module's home since the package became a folder per stage; the
# layout change writes this table. Old names keep importing, as the same module object, with a warning.
_MOVED: dict[str, str] = {
    "audio": "sodadata.encode.audio",
    "audio_files": "sodadata.tools.audio_files",
    "audio_strings": "sodadata.tools.audio_strings",
    "card": "sodadata.tools.card",
    "catalog": "sodadata.read.catalog",
    "chunked_engine": "sodadata.encode.chunked_engine",
    "cli_recipe": "sodadata.run.cli_recipe",
    "codec": "sodadata.encode.codec",
    "codec_config": "sodadata.encode.codec_config",
    "codec_loading": "sodadata.encode.codec_loading",
    "codec_random": "sodadata.encode.codec_random",
    "codes": "sodadata.encode.codes",
    "completeness": "sodadata.read.completeness",
    "decode": "sodadata.tools.decode",
    "document": "sodadata.write.document",
    "engine_check": "sodadata.encode.engine_check",
    "export": "sodadata.mix.export",
    "hub": "sodadata.tools.hub",
    "listening_page": "sodadata.tools.listening_page",
    "listening_report": "sodadata.tools.listening_report",
    "made_by": "sodadata.write.made_by",
    "malloc_tuning": "sodadata.encode.malloc_tuning",
    "mimi_decoder": "sodadata.tools.mimi_decoder",
    "mixture": "sodadata.mix.mixture",
    "outputs": "sodadata.write.outputs",
    "packing": "sodadata.mix.packing",
    "padding_repair": "sodadata.encode.padding_repair",
    "pipeline": "sodadata.run.pipeline",
    "plan": "sodadata.tools.plan",
    "published": "sodadata.write.published",
    "recipe": "sodadata.read.recipe",
    "recorded_codec": "sodadata.tools.recorded_codec",
    "row_lookup": "sodadata.tools.row_lookup",
    "runner": "sodadata.run.runner",
    "shards": "sodadata.write.shards",
    "sources": "sodadata.read.sources",
    "stats": "sodadata.tools.stats",
    "stats_markdown": "sodadata.tools.stats_markdown",
    "stats_numbers": "sodadata.tools.stats_numbers",
    "stats_plots": "sodadata.tools.stats_plots",
    "streaming": "sodadata.mix.streaming",
    "tarstream": "sodadata.read.tarstream",
    "tokenizer": "sodadata.mix.tokenizer",
    "validate": "sodadata.tools.validate",
    "worker_layout": "sodadata.run.worker_layout",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sodadata' has no attribute {name!r}")


def _user_stacklevel() -> int:
    """The stacklevel of the first frame outside the import machinery and this file: the user's import line.

    ``warnings.warn`` itself skips the frames of ``importlib._bootstrap`` when it counts, so they are not counted here.
    """
    level, frame = 1, sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if "importlib" in name and "_bootstrap" in name:
            pass
        elif name in (__file__, importlib.__file__):
            level += 1
        else:
            return level
        frame = frame.f_back
    return level


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old name (``sodadata.<name>``, and anything below it) as the module at its new home in ``_MOVED``.

    A finder rather than shim files: the old name is the *same* module object (``is``, monkeypatching and
    isinstance see one module), and no file is left behind for each old name. It sits first on ``sys.meta_path`` so
    that a submodule of a moved package is never found a second time under its old parent's path.
    """

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = _new_name(fullname)
        return None if new is None else importlib.machinery.ModuleSpec(fullname, self, loader_state=new)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {spec.loader_state}: import it from there (the old name will go)",
            DeprecationWarning,
            stacklevel=_user_stacklevel(),
        )
        module = importlib.import_module(spec.loader_state)
        spec.loader_state = module.__spec__  # the import system overwrites __spec__ next: exec_module puts it back
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = module.__spec__.loader_state  # the module's own spec, not the old name's


def _new_name(fullname: str) -> str | None:
    if not fullname.startswith("sodadata."):
        return None
    head, dot, rest = fullname[len("sodadata.") :].partition(".")
    return _MOVED[head] + dot + rest if head in _MOVED else None


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModuleFinder())
