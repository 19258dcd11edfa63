"""The package's shape: `import charfast` loads the core alone, and imports point down
(study -> gpt -> core), never up."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import charfast

PACKAGE = Path(charfast.__file__).resolve().parent
# Modules of the core that may import an app (none: the lazy re-export of GPT / GPTConfig and
# the `python -m charfast.train` / `charfast.sample` entry points name it as a string).
ALLOWED_UPWARD: dict[str, set[str]] = {}


def test_import_charfast_loads_the_core_only():
    check = (
        "import sys, charfast\n"
        "assert 'torch' not in sys.modules  # the command lines take charge of signals before torch loads\n"
        "from charfast import char_lstm, CharEmbedding\n"
        "assert callable(char_lstm) and char_lstm.__module__ == 'charfast.char_lstm_op'\n"
        "loaded = [m for m in ('charfast.gpt', 'charfast.study', 'tiktoken', 'matplotlib', 'tokenizers') "
        "if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "from charfast import GPT, GPTConfig, TokenCharTable, CharEmbedding\n"
        "assert 'charfast.gpt' in sys.modules and GPT.__module__ == 'charfast.gpt.model'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize(
    "layer, forbidden",
    [("core", ("charfast.gpt", "charfast.study")), ("gpt", ("charfast.study",))],
)
def test_imports_point_down(layer, forbidden):
    if layer == "core":
        files = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in ("gpt", "study")]
    else:
        files = list((PACKAGE / layer).rglob("*.py"))
    assert files
    upward = {}
    for path in files:
        name = path.relative_to(PACKAGE.parent).as_posix()
        found = {
            m for m in _imported_modules(path) if m.startswith(forbidden) and m not in ALLOWED_UPWARD.get(name, set())
        }
        if found:
            upward[name] = sorted(found)
    assert not upward, f"{layer} modules import from above them: {upward}"


def test_version_is_defined_once():
    from importlib.metadata import version

    assert charfast.__version__ == version("charfast")
