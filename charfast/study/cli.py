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
            "Pretrain char and baseline-matched GPTs, fine-tune them on character tasks and compare "
            "exact-match accuracy per task and split; finished stages are reused."
        ),
    )
    defaults = StudyConfig()
    parser.add_argument("--out-dir", default=defaults.out_dir, help="where every stage and the report go")
    parser.add_argument(
        "--preset",
        default=defaults.preset,
        choices=list(PRESETS),
        help="small: ~25 min on a 2-core CPU; full: GPT-2 small on a GPU",
    )
    parser.add_argument(
        "--tokenizers",
        nargs="+",
        default=list(defaults.tokenizers),
        help="one run set per tokenizer: the vocabulary sweep, e.g. bpe:512 bpe:4096 cl100k_base",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=list(defaults.seeds))
    parser.add_argument("--archs", nargs="+", default=list(defaults.archs))
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=list(defaults.tasks),
        help=f"default: all; the study's four are {' '.join(STUDY_TASKS)}",
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
            tokenizers=tuple(args.tokenizers),
            seeds=tuple(args.seeds),
            archs=tuple(args.archs),
            tasks=tuple(args.tasks),
            data=args.data,
            device=args.device,
        )
        results = Study(config).run()  # validates every setting first
        print(f"wrote {write_report(results, Path(config.out_dir))}")
        return 0

    return run_cli("charfast.study", study)
