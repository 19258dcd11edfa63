"""--out-dir: one run at a time (an flock held for the run's lifetime), a killed run's lock
and temp files taken over, and a folder that cannot be used refused before any work."""

import errno
import os
import subprocess
import sys
import time

import pytest
from tiny_runs import read_metrics, tiny_flags

from charfast.atomic import this_host
from charfast.gpt import out_dir, run_data, train
from charfast.gpt.out_dir import LOCK_NAME, OutDirInUse, claim_out_dir


def test_a_held_folder_is_refused_and_freed_afterwards(tmp_path):
    (tmp_path / "run").mkdir()
    with claim_out_dir(tmp_path / "run") as folder:
        assert (folder / LOCK_NAME).read_text() == f"{this_host()}:{os.getpid()}"
        with pytest.raises(OutDirInUse, match=rf"in use by another run \({this_host()}:{os.getpid()}\)"):
            with claim_out_dir(tmp_path / "run"):
                pass
    assert (tmp_path / "run" / LOCK_NAME).read_text() == ""  # released and marked clean
    with claim_out_dir(tmp_path / "run"):
        pass


def test_a_folder_made_for_a_run_that_wrote_nothing_is_removed(tmp_path):
    with claim_out_dir(tmp_path / "new" / "run"):
        pass
    assert not (tmp_path / "new" / "run").exists()  # the parents it made stay: they may be shared
    with claim_out_dir(tmp_path / "kept") as folder:
        (folder / "metrics.jsonl").write_text("")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == [LOCK_NAME, "metrics.jsonl"]


@pytest.mark.parametrize("code", ["ENOLCK", "ENOSYS", "EOPNOTSUPP"])
def test_a_filesystem_that_refuses_locks_runs_unlocked_saying_so(tmp_path, capsys, monkeypatch, code):
    def refuse(lock, operation):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))

    monkeypatch.setattr(out_dir.fcntl, "flock", refuse)
    with claim_out_dir(tmp_path / "run") as folder:
        assert (folder / LOCK_NAME).read_text() == f"{this_host()}:{os.getpid()}"  # the holder, recorded
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "its filesystem refuses locks" in out and "running unlocked" in out


def test_a_killed_runs_lock_and_temp_files_are_taken_over(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has ended
    host = this_host()
    (folder / LOCK_NAME).write_text(f"{host}:{dead_pid}")  # it held the lock when it was killed
    (folder / f".ckpt.pt.tmp-{host}-{dead_pid}").write_bytes(b"half a checkpoint")
    (folder / f".metrics.jsonl.tmp-{host}-{os.getpid()}").write_bytes(b"a live process's")  # not stale: kept
    # Another machine's writer on a shared filesystem: its PID means nothing here, so kept.
    (folder / f".probe.json.tmp-other-node-{dead_pid}").write_bytes(b"another host's")
    with claim_out_dir(folder):
        assert not (folder / f".ckpt.pt.tmp-{host}-{dead_pid}").exists()
        assert (folder / f".metrics.jsonl.tmp-{host}-{os.getpid()}").exists()
        assert (folder / f".probe.json.tmp-other-node-{dead_pid}").exists()
    note = capsys.readouterr().out
    assert f"took over from a run that did not finish ({host}:{dead_pid}); removed 1 temp file(s)" in note


@pytest.mark.parametrize(
    "out_dir, code, message",
    [
        ("FILE", 2, "exists and is not a folder"),
        ("/dev/null", 2, "--out-dir /dev/null exists and is not a folder"),
        ("FILE/run", 1, "Not a directory"),
        ("/proc/charfast-test/run", 1, "/proc/charfast-test: No such file or directory"),
    ],
    ids=["file", "dev-null", "under-a-file", "under-proc"],
)
def test_an_unusable_out_dir_is_one_line_before_any_work(
    tiny_corpus, tiny_cache, tmp_path, monkeypatch, capsys, out_dir, code, message
):
    (tmp_path / "FILE").write_text("a file")
    out_dir = out_dir.replace("FILE", str(tmp_path / "FILE"))
    monkeypatch.setattr(
        run_data, "index_corpus", lambda *a, **k: pytest.fail("data was read before --out-dir was checked")
    )
    assert train.main(tiny_flags(tiny_corpus, out_dir, tiny_cache)) == code
    err = capsys.readouterr().err
    assert err.startswith("charfast.train: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_two_runs_on_one_out_dir(tiny_corpus, tiny_cache, tmp_path, capsys):
    out = tmp_path / "run"
    flags = tiny_flags(tiny_corpus, out, tiny_cache, max_steps=40, eval_interval=10, sample_tokens=0)
    first = subprocess.Popen([sys.executable, "-m", "charfast.train", *flags], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / LOCK_NAME).exists() or (out / LOCK_NAME).read_text() != f"{this_host()}:{first.pid}":
        assert first.poll() is None and time.monotonic() < deadline, "the first run never took the folder"
        time.sleep(0.05)
    assert train.main(flags) == 2  # the second, while the first trains
    assert f"is in use by another run ({this_host()}:{first.pid})" in capsys.readouterr().err
    assert first.wait(timeout=300) == 0
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 41))  # every step once, all the first run's
