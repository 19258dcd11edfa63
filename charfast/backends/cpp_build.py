"""Loading the C++ ops (csrc/): the prebuilt extension `charfast._C`, else a JIT build.

setup.py compiles csrc/ into `charfast._C` when torch and a C++ compiler are there at
install time. Without it, the first use compiles the same sources with
torch.utils.cpp_extension.load (ninja; cached under TORCH_EXTENSIONS_DIR, so later
processes load the cached library). Both register the ops `torch.ops.charfast.*`.
"""
from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

# csrc/ next to the package: present in a source checkout (and an editable install).
CSRC = Path(__file__).resolve().parents[2] / "csrc"
SOURCES = ["trie.cpp", "char_lstm_trie.cpp"]
# -fopenmp: at::parallel_for is inline OpenMP code; without it the loops run on one thread.
# The OpenMP runtime resolves to the libgomp torch already loaded (same soname).
CXX_FLAGS = ["-O3", "-fopenmp"]
LD_FLAGS = ["-fopenmp"]
JIT_NAME = "charfast_cpu_ops"


def compiler_missing_reason() -> str | None:
    """None when a C++ compiler is on PATH, else why the JIT build cannot run."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler found (looked for {compiler!r} on PATH; set CXX or install g++/clang++)"
    if shutil.which("ninja") is None:
        from torch.utils.cpp_extension import is_ninja_available
        if not is_ninja_available():
            return "ninja is not installed (pip install ninja)"
    return None


def jit_build() -> None:
    """Compile csrc/ with torch.utils.cpp_extension.load (cached) and load it."""
    from torch.utils.cpp_extension import load

    missing = [name for name in SOURCES if not (CSRC / name).is_file()]
    if missing:
        raise RuntimeError(f"the C++ sources are not in {CSRC} (missing {', '.join(missing)}); "
                           "install charfast from a source checkout to build them")
    reason = compiler_missing_reason()
    if reason is not None:
        raise RuntimeError(reason)
    load(name=JIT_NAME, sources=[str(CSRC / name) for name in SOURCES], extra_cflags=CXX_FLAGS,
         extra_ldflags=LD_FLAGS, extra_include_paths=[str(CSRC)], is_python_module=False, verbose=False)


@functools.lru_cache(maxsize=None)
def load_error() -> str | None:
    """Load the ops once per process; None on success, else why they cannot be loaded."""
    try:
        import charfast._C  # noqa: F401 - importing registers the ops
        return None
    except ImportError as err:
        prebuilt_error = f"no prebuilt charfast._C ({err})"
    try:
        jit_build()
    except Exception as err:  # noqa: BLE001 - reported as the backend's reason
        return f"{prebuilt_error}, and the JIT build failed: {type(err).__name__}: {err}"
    return None
