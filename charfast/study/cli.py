"""The study's command line: `python -m charfast.study [flags]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from charfast.gpt.failures import run_cli
from charfast.study.pipeline import PRESETS, Study, StudyConfig
from charfast.study.report import write_report
from charfast.study.tasks import STUDY_TASKS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m charfast.study",
        description=(
            "Pretrain char, baseline-matched and char-shuffled GPTs per tokenizer and seed, probe their "
            "input vectors for spelling, fine-tune them on character tasks with learning curves and compare "
            "exact-match accuracy per task and split; finished stages are reused."
        ),
    )
    defaults = StudyConfig()
    parser.add_argument("--out-dir", default=defaults.out_dir, help="where every stage and the report go")
    parser.add_argument(
        "--preset",
        default=defaults.preset,
        choices=list(PRESETS),
        help="quick: every stage in minutes, tiny model; small: ~90 min on a 2-core CPU with --jobs 2; "
        "length: 16x longer pretraining with its weights kept along the way, ~2 h with --jobs 2; "
        "full: GPT-2 small on a GPU",
    )
    parser.add_argument(
        "--tokenizers",
        nargs="+",
        default=None,
        help="one run set per tokenizer, the vocabulary sweep (default: the preset's, e.g. bpe:512 bpe:4096 bpe:8192)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the preset's")
    parser.add_argument("--archs", nargs="+", default=None, help="default: the preset's")
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        help=f"default: the preset's; the original study's four are {' '.join(STUDY_TASKS)}",
    )
    parser.add_argument(
        "--solo-tasks",
        nargs="*",
        default=None,
        help="tasks fine-tuned further alone after the mixed fine-tuning, each from the mixed weights (default: "
        "the preset's among --tasks, e.g. count; give the flag with no task for none)",
    )
    parser.add_argument(
        "--jobs", type=int, default=defaults.jobs, help="runs trained at once, each with its share of the CPU threads"
    )
    parser.add_argument("--data", default=None, help="text file or folder (default: the embedded Shakespeare)")
    parser.add_argument("--device", default=defaults.device)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The CLI; exit codes as charfast.train's (charfast.gpt.failures)."""
    args = build_parser().parse_args(argv)

    def study() -> int:
        config = StudyConfig(
            out_dir=args.out_dir,
            preset=args.preset,
            tokenizers=None if args.tokenizers is None else tuple(args.tokenizers),
            seeds=None if args.seeds is None else tuple(args.seeds),
            archs=None if args.archs is None else tuple(args.archs),
            tasks=None if args.tasks is None else tuple(args.tasks),
            solo_tasks=None if args.solo_tasks is None else tuple(args.solo_tasks),
            data=args.data,
            device=args.device,
            jobs=args.jobs,
        )
        probes, results = Study(config).run()  # validates every setting first
        print(f"wrote {write_report(probes, results, Path(config.out_dir))}")
        return 0

    return run_cli("charfast.study", study)
