import pytest
from tiny_runs import write_tiny_corpus


@pytest.fixture
def tiny_study(tmp_path, monkeypatch):
    """The study CLI's flags for the quick preset on a tiny corpus, into tmp_path/study."""
    corpus = write_tiny_corpus(tmp_path / "corpus", chars_per_doc=30_000)
    monkeypatch.setenv("CHARFAST_CACHE", str(tmp_path / "cache"))
    return [
        "--out-dir",
        str(tmp_path / "study"),
        "--data",
        str(corpus),
        "--preset",
        "quick",
        "--device",
        "cpu",
    ]
