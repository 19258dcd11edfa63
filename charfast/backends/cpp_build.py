"""Loading the C++ ops (csrc/): the prebuilt extension `charfast._C`, else a JIT build.

setup.py compiles csrc/ into `charfast._C` when torch and a C++ compiler are there at
install time. Without it, the first use compiles the same sources with
torch.utils.cpp_extension.load (ninja; cached under TORCH_EXTENSIONS_DIR, so later
processes load the cached library). Both register the ops `torch.ops.charfast.*`.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
from pathlib import Path

logger = logging.getLogger("charfast")

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
        raise RuntimeError(
            f"the C++ sources are not in {CSRC} (missing {', '.join(missing)}); "
            "install charfast from a source checkout to build them"
        )
    reason = compiler_missing_reason()
    if reason is not None:
        raise RuntimeError(reason)
    load(
        name=JIT_NAME,
        sources=[str(CSRC / name) for name in SOURCES],
        extra_cflags=CXX_FLAGS,
        extra_ldflags=LD_FLAGS,
        extra_include_paths=[str(CSRC)],
        is_python_module=False,
        verbose=False,
    )


def ops_registered() -> bool:
    """Whether this process has the C++ ops already (from charfast._C or a JIT build)."""
    import torch

    return hasattr(torch.ops.charfast, "trie_lstm_forward")


def prebuilt_problem() -> str | None:
    """None when charfast._C exists and is at least as new as csrc/, else what is wrong with it."""
    spec = importlib.util.find_spec("charfast._C")
    if spec is None or not spec.origin:
        return "no prebuilt charfast._C"
    built = os.path.getmtime(spec.origin)
    # In a source checkout, sources edited after the build make the prebuilt library stale.
    newer = [p.name for p in CSRC.glob("*.[ch]*") if p.stat().st_mtime > built] if CSRC.is_dir() else []
    if newer:
        return f"the prebuilt charfast._C is older than csrc/ ({', '.join(sorted(newer))})"
    return None


@functools.cache
def load_error() -> str | None:
    """Load the ops once per process; None on success, else why they cannot be loaded."""
    if ops_registered():  # e.g. jit_build() ran already: loading a second copy would abort
        return None
    prebuilt_error = prebuilt_problem()
    if prebuilt_error is None:
        try:
            import charfast._C  # noqa: F401 - importing registers the ops

            return None
        except ImportError as err:
            prebuilt_error = f"charfast._C failed to import ({err})"
    logger.info(
        "charfast: %s; building the C++ ops with torch.utils.cpp_extension (cached after the first time)",
        prebuilt_error,
    )
    try:
        jit_build()
    except Exception as err:  # noqa: BLE001 - reported as the backend's reason
        return f"{prebuilt_error}, and the JIT build failed: {type(err).__name__}: {err}"
    return None
