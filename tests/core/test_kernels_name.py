"""The top-level kernels/ folder is charfast.kernels, never the environment's `kernels`.

Started in the checkout root (`python -m pytest`, `python -c`, a notebook), Python puts the
root on sys.path, where kernels/ would shadow the `kernels` package that transformers
imports (Hugging Face's). Imported under that name, the folder hands over to the
environment's package; charfast.kernels keeps working in editable and regular installs.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]


def _install_stand_in(site: Path) -> Path:
    """A top-level `kernels` package, with a submodule, in the folder `site`."""
    package = site / "kernels"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("STAND_IN = True\nfrom kernels.part import VALUE\n")
    (package / "part.py").write_text("VALUE = 42\n")
    return package


def _without_kernels_modules() -> dict:
    return {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "kernels"}


def test_the_environments_kernels_wins_from_the_checkout_root_in_process(tmp_path, monkeypatch):
    package = _install_stand_in(tmp_path / "site")
    monkeypatch.setattr(sys, "path", [str(CHECKOUT), str(tmp_path / "site"), *sys.path])
    saved = _without_kernels_modules()
    try:
        kernels = importlib.import_module("kernels")
        assert kernels.STAND_IN and kernels.VALUE == 42
        assert Path(kernels.__file__).resolve() == (package / "__init__.py").resolve()
        assert sys.modules["kernels"] is kernels and sys.modules["kernels.part"].VALUE == 42
    finally:
        _without_kernels_modules()
        sys.modules.update(saved)


def _python(code: str, cwd: Path, *flags: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [sys.executable, *flags, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_environments_kernels_wins_from_the_checkout_root_in_a_subprocess(tmp_path):
    package = _install_stand_in(tmp_path / "site")
    code = "import kernels, kernels.part; print(kernels.__file__, kernels.VALUE, kernels.part.__file__)"
    result = _python(code, CHECKOUT, pythonpath=tmp_path / "site")
    assert result.returncode == 0, result.stderr[-2000:]
    init, value, part = result.stdout.split()
    assert Path(init).resolve() == (package / "__init__.py").resolve() and value == "42"
    assert Path(part).resolve() == (package / "part.py").resolve()


def test_without_one_in_the_environment_import_kernels_fails_as_anywhere_else():
    # -S: no site-packages, so no `kernels` but the checkout's folder.
    result = _python("import kernels", CHECKOUT, "-S")
    assert result.returncode == 1 and "ModuleNotFoundError: No module named 'kernels'" in result.stderr


@pytest.mark.parametrize("cwd", ["checkout", "elsewhere"])
def test_charfast_kernels_and_transformers_import_side_by_side(tmp_path, cwd):
    code = (
        "import charfast.kernels.lstm_tile as tile, charfast.kernels\n"
        "from transformers import GPT2LMHeadModel\n"
        "print(charfast.kernels.__file__, tile.__file__)"
    )
    result = _python(code, CHECKOUT if cwd == "checkout" else tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(Path(p).resolve().parent == CHECKOUT / "kernels" for p in result.stdout.split())


@pytest.mark.slow
def test_a_regular_install_has_charfast_kernels(tmp_path):
    """pip install (not editable) of a copy of the checkout: kernels/ lands as charfast.kernels."""
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files"], cwd=CHECKOUT, capture_output=True, text=True, check=True)
    for name in tracked.stdout.splitlines():
        if (CHECKOUT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(CHECKOUT / name, source / name)
    target = tmp_path / "target"
    # CXX names no compiler: the install skips the C++ extension (compiled on first use instead).
    env = {**os.environ, "CXX": "no-such-compiler"}
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--target", str(target)]
    result = subprocess.run([*install, str(source)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    code = (
        "import charfast.kernels.lstm_tile as tile, charfast.kernels\nprint(charfast.kernels.__file__, tile.__file__)"
    )
    result = _python(code, tmp_path, pythonpath=target)
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(Path(p).resolve().parent == (target / "charfast" / "kernels").resolve() for p in result.stdout.split())
