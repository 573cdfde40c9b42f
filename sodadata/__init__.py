"""sodadata: public speech corpora -> interleaved text + Mimi-token training data (SODA format)."""

from __future__ import annotations

from sodadata.codes import chars_to_codes, check_audio_span, codes_to_chars

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "audio_to_str",
    "audio_to_string",
    "chars_to_codes",
    "check_audio_span",
    "codes_to_chars",
    "str_to_audio",
    "string_to_audio",
]

_LAZY = {  # heavy (torch) helpers load on first use
    "audio_to_string": "sodadata.decode",
    "string_to_audio": "sodadata.decode",
    "audio_to_str": "sodadata.decode",
    "str_to_audio": "sodadata.decode",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sodadata' has no attribute {name!r}")
