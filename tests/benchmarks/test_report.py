"""benchmarks/report.py turns a saved run into Markdown tables with the right ratios."""

import json
import subprocess
import sys
from pathlib import Path

REPORT = Path(__file__).resolve().parents[2] / "benchmarks" / "report.py"


def bench(name, group, median, **extra_info):
    return dict(name=name, group=group, extra_info=extra_info, stats=dict(median=median, iqr=median / 10, rounds=5))


def test_report_ranks_each_group_by_median(tmp_path):
    run = dict(
        datetime="2026-11-24T19:51:14",
        commit_info=dict(id="0123456789abcdef", dirty=False),
        machine_info=dict(cpu=dict(brand_raw="Test CPU", count=2), python_version="3.11.7"),
        benchmarks=[
            bench("test_x[study]", "fwd", 0.2164),
            bench("test_x[cpp]", "fwd", 0.0132),
            bench("test_step[eager]", "step", 0.25, char_over_baseline=1.032, device="GPU X"),
        ],
    )
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(run))
    done = subprocess.run(
        [sys.executable, str(REPORT), str(path), "--command", "pytest benchmarks/"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "Run 2026-11-24 19:51 UTC, commit 01234567."
    assert "Test CPU, 2 CPUs, GPU X; Python 3.11.7" in lines[1]
    assert "    pytest benchmarks/" in lines
    fwd = lines.index("### fwd")
    assert lines[fwd + 2] == "| variant | median | IQR | rounds | vs cpp | notes |"
    assert lines[fwd + 4].startswith("| cpp | 13.200 ms | 1.320 ms | 5 | 1.00x |")
    assert lines[fwd + 5].startswith("| study | 216.400 ms | 21.640 ms | 5 | 16.39x |")
    assert "char_over_baseline 1.03" in lines[lines.index("### step") + 4]


def test_report_refuses_a_run_without_results(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text(json.dumps(dict(benchmarks=[])))
    done = subprocess.run([sys.executable, str(REPORT), str(path)], capture_output=True, text=True)
    assert done.returncode != 0 and "holds no benchmark results" in done.stderr
