"""charfast: fast character-aware token embeddings (a char-LSTM per BPE token)."""
import importlib.util as _importlib_util
import sys as _sys
from pathlib import Path as _Path


def _map_source_tree_kernels() -> None:
    """The Triton kernels live in the top-level kernels/ folder; an install maps it to
    charfast.kernels. Run from a source checkout (or an editable install whose mapping
    the interpreter does not honour), map it here the same way."""
    if _importlib_util.find_spec("charfast.kernels") is not None:
        return
    kernels_dir = _Path(__file__).resolve().parent.parent / "kernels"
    if not (kernels_dir / "__init__.py").is_file():
        return  # no kernels/ beside the package: the Triton backend reports itself unavailable
    spec = _importlib_util.spec_from_file_location("charfast.kernels", kernels_dir / "__init__.py",
                                                   submodule_search_locations=[str(kernels_dir)])
    module = _importlib_util.module_from_spec(spec)
    _sys.modules["charfast.kernels"] = module
    spec.loader.exec_module(module)


_map_source_tree_kernels()

from charfast.char_embedding import CharEmbedding  # noqa: E402
from charfast.char_lstm import char_lstm  # noqa: E402
from charfast.table import TokenCharTable  # noqa: E402

__all__ = ["TokenCharTable", "CharEmbedding", "char_lstm", "GPT", "GPTConfig"]
__version__ = "0.1.0"

# The GPT app's classes, re-exported for `from charfast import GPT, GPTConfig` but imported
# only when asked for: `import charfast` loads the core alone.
_FROM_GPT = ("GPT", "GPTConfig")


def __getattr__(name: str):
    if name in _FROM_GPT:
        from charfast import gpt

        return getattr(gpt, name)
    raise AttributeError(f"module 'charfast' has no attribute {name!r}")
