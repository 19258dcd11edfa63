"""Shared test set-up: Triton's mode, the gpu / cpp markers, cl100k fixtures, a fixed seed."""

import os

import pytest
import torch

# Without a GPU the Triton kernels run on the CPU interpreter; with one they compile.
# (Set before anything imports triton: the kernels read it when they are defined.)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
KERNELS_COMPILED_FOR_CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"


def _interpreter_bfloat16_as_on_a_gpu():
    """Teach Triton's interpreter bfloat16 as a GPU computes it, so the tests run the kernels
    in the GPU training dtype on the CPU too. Up to Triton 3.9 the interpreter
    - multiplies the raw uint16 bit patterns of bfloat16 tl.dot operands
      (triton-lang/triton#11584): here they become the float32 values they encode, as on a
      GPU (exact products, float32 sums);
    - truncates float32 to bfloat16 where a GPU rounds to nearest even: here torch rounds.
    Returns the unpatched create_dot."""
    import numpy as np
    import triton.language as tl
    from triton.runtime.interpreter import InterpreterBuilder, TensorHandle

    unpatched_dot = InterpreterBuilder.create_dot
    unpatched_cast = InterpreterBuilder.cast_impl

    def as_float32(handle):
        if handle.dtype.scalar != tl.bfloat16 or handle.data.dtype != np.uint16:  # not the broken form
            return handle
        return TensorHandle((handle.data.astype(np.uint32) << 16).view(np.float32), tl.float32)

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        return unpatched_dot(self, as_float32(a), as_float32(b), d, input_precision, max_num_imprecise_acc)

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar != tl.float32 or dst_type.scalar != tl.bfloat16:
            return unpatched_cast(self, src, dst_type)
        rounded = torch.from_numpy(np.ascontiguousarray(src.data, dtype=np.float32)).to(torch.bfloat16)
        return TensorHandle(rounded.view(torch.int16).numpy().view(np.uint16), tl.bfloat16)

    InterpreterBuilder.create_dot = create_dot
    InterpreterBuilder.cast_impl = cast_impl
    return unpatched_dot


UNPATCHED_INTERPRETER_DOT = _interpreter_bfloat16_as_on_a_gpu() if os.environ.get("TRITON_INTERPRET") == "1" else None


@pytest.fixture
def unpatched_interpreter_dot():
    """Triton's own interpreter dot, before the patch above (a fixture: `from conftest import`
    would find whichever of the suite's conftest modules was imported last)."""
    return UNPATCHED_INTERPRETER_DOT


def pytest_runtest_setup(item):
    """`gpu` tests skip without CUDA; `cpp` tests skip when the C++ backend cannot load,
    and fail instead under CHARFAST_REQUIRE_CPP=1 (CI), so a broken csrc/ build is seen."""
    if item.get_closest_marker("gpu") and not KERNELS_COMPILED_FOR_CUDA:
        pytest.skip("needs a CUDA GPU and compiled Triton kernels (TRITON_INTERPRET unset)")
    if item.get_closest_marker("cpp"):
        from charfast.backends.cpp import ops_load_error

        reason = ops_load_error()
        if reason is not None and os.environ.get("CHARFAST_REQUIRE_CPP") == "1":
            pytest.fail(f"CHARFAST_REQUIRE_CPP=1 but the C++ backend cannot load: {reason}", pytrace=False)
        if reason is not None:
            pytest.skip(f"the C++ backend cannot load: {reason}")


@pytest.fixture(scope="session")
def cl100k():
    from charfast.gpt.tokenizer import get_tiktoken

    return get_tiktoken("cl100k_base")


@pytest.fixture(scope="session")
def cl100k_table(cl100k, tmp_path_factory):
    from charfast import TokenCharTable

    return TokenCharTable.from_tiktoken(cl100k, cache_dir=tmp_path_factory.mktemp("table-cache"))


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A folder of 4 short plays (tiny_runs.write_tiny_corpus)."""
    from tiny_runs import write_tiny_corpus

    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """A cache folder (tokenizers, token ids, tables) shared by the tiny runs."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
