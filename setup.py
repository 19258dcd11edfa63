"""Builds the C++ extension charfast._C; everything else about the package is in pyproject.toml.

When torch is importable at build time (`pip install --no-build-isolation -e .`) and a
C++ compiler is on PATH, csrc/ is compiled into charfast._C with ninja (MAX_JOBS bounds
its parallel jobs). Otherwise the install still succeeds and the C++ backend is compiled
on first use (charfast/backends/cpp_build.py), or reported unavailable when there is no
compiler.
"""

import os
import runpy
import shutil

from setuptools import setup

# Sources and flags are shared with the run-time JIT build; read them without importing charfast.
_BUILD = runpy.run_path(os.path.join("charfast", "backends", "cpp_build.py"))


def cpp_extension():
    """([charfast._C], cmdclass) when torch and a C++ compiler are available, else ([], {})."""
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        print("charfast: torch is not importable at build time; skipping charfast._C (JIT-built on first use)")
        return [], {}
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        print("charfast: no C++ compiler on PATH; skipping charfast._C (the cpp backend will be unavailable)")
        return [], {}
    extension = CppExtension(
        "charfast._C",
        sources=[os.path.join("csrc", name) for name in _BUILD["SOURCES"]],
        include_dirs=[os.path.abspath("csrc")],
        extra_compile_args=_BUILD["CXX_FLAGS"],
        extra_link_args=_BUILD["LD_FLAGS"],
    )
    return [extension], {"build_ext": BuildExtension}


EXT_MODULES, CMDCLASS = cpp_extension()

setup(ext_modules=EXT_MODULES, cmdclass=CMDCLASS)
