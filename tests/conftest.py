import os

import pytest
import torch

# Without a GPU the Triton kernels run on the CPU interpreter; with one they compile.
# (Set before anything imports triton: the kernels read it when they are defined.)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def cl100k():
    from charfast.tokenizer import get_tiktoken
    return get_tiktoken("cl100k_base")


@pytest.fixture(scope="session")
def cl100k_table(cl100k, tmp_path_factory):
    from charfast import TokenCharTable
    return TokenCharTable.from_tiktoken(cl100k, cache_dir=tmp_path_factory.mktemp("table-cache"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
