"""A saved benchmark run as Markdown tables, for BENCHMARKS.md.

    python -m pytest benchmarks/ --benchmark-only --benchmark-json bench.json
    python benchmarks/report.py bench.json [--command "..."] > section.md

One table per group: each variant's median, IQR and rounds, how many times slower than
the group's fastest, and what the benchmark recorded about itself (its own ratios, time
over the hardware floor, tokens per second). The header names the machine, the software
and the run's date and commit, from the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ratios import Result, by_group  # noqa: E402

NOTES = ("time_over_floor", "tokens_per_s", "distinct", "mean_token_len")  # extra_info worth a column


def load(path: Path) -> tuple[dict, list[Result]]:
    run = json.loads(path.read_text())
    results = [
        Result(
            b.get("group") or "(no group)",
            b["name"],
            b["stats"]["median"],
            b["stats"]["iqr"],
            b["stats"]["rounds"],
            b.get("extra_info") or {},
        )
        for b in run.get("benchmarks", [])
    ]
    return run, results


def header(run: dict, command: str | None) -> list[str]:
    machine, commit = run.get("machine_info", {}), run.get("commit_info", {})
    cpu = machine.get("cpu", {})
    devices = sorted(
        {str(b["extra_info"]["device"]) for b in run.get("benchmarks", []) if (b.get("extra_info") or {}).get("device")}
    )
    lines = [
        f"Run {run.get('datetime', '?')[:16].replace('T', ' ')} UTC, commit {commit.get('id', '?')[:8]}"
        f"{' (uncommitted changes)' if commit.get('dirty') else ''}.",
        f"Machine: {cpu.get('brand_raw', machine.get('processor', '?'))}, {cpu.get('count', '?')} CPUs"
        f"{', ' + ', '.join(devices) if devices else ''}; Python {machine.get('python_version', '?')}.",
    ]
    if command:
        lines += ["", f"    {command}"]
    return lines


def format_note(key: str, value) -> str:
    if isinstance(value, float):
        value = f"{value:.3g}"
    return f"{key} {value}"


def table(ranked: list[tuple[Result, float]]) -> list[str]:
    fastest = ranked[0][0].variant
    lines = [f"| variant | median | IQR | rounds | vs {fastest} | notes |", "|---|---|---|---|---|---|"]
    for result, ratio in ranked:
        notes = [format_note(k, v) for k, v in result.own_ratios.items()]
        notes += [
            format_note(k, result.extra_info[k])
            for k in NOTES
            if result.extra_info.get(k) is not None and k not in result.own_ratios
        ]
        lines.append(
            f"| {result.variant} | {result.median * 1e3:.3f} ms | {result.iqr * 1e3:.3f} ms | "
            f"{result.rounds} | {ratio:.2f}x | {'; '.join(notes)} |"
        )
    return lines


def report(run: dict, results: list[Result], command: str | None) -> str:
    lines = header(run, command)
    for group, ranked in by_group(results).items():
        lines += ["", f"### {group}", ""] + table(ranked)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", type=Path, help="the file --benchmark-json wrote")
    parser.add_argument("--command", help="the command that produced it, printed under the header")
    args = parser.parse_args()
    run, results = load(args.json)
    if not results:
        sys.exit(f"report.py: {args.json} holds no benchmark results")
    sys.stdout.write(report(run, results, args.command))


if __name__ == "__main__":
    main()
