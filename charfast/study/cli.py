"""The study's command line: `python -m charfast.study [flags]`."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
from pathlib import Path

from charfast.gpt.config import CommaJoined
from charfast.gpt.failures import run_cli
from charfast.gpt.tracking import TrackedRun, Trackers, parse_trackers
from charfast.study.config import StudyConfig
from charfast.study.engines import run_local
from charfast.study.gather import finished_records, gather
from charfast.study.pipeline import Study, run_stage
from charfast.study.presets import PRESETS
from charfast.study.report import TASK_SECTION, write_report
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
        "encoders: the char-LSTM against cheaper encoders at equal parameters, 3 seeds, hours; "
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
        "--jobs",
        type=int,
        default=None,
        help="local engine: stages run at once, each with its share of the CPU threads and, with --device cuda, "
        "a GPU of its own (default 1)",
    )
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this machine (--jobs); ray: every stage a Ray task, on a private cluster started for the "
        "run or on --ray-address (pip install 'charfast[ray]')",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="ray engine: an existing cluster ('auto', or host:port); default: a private cluster in this process",
    )
    parser.add_argument(
        "--stage-resources",
        nargs="+",
        default=(),
        metavar="KIND=RES:N,...",
        help="ray engine: what each kind of stage asks for, e.g. pretrain=gpus:1,cpus:8 probe=gpus:0.5,cpus:2 "
        "(kinds: pretrain, splits, probe, finetune; resources: cpus, gpus)",
    )
    parser.add_argument("--data", default=None, help="text file or folder (default: the embedded Shakespeare)")
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument(
        "--log",
        "--log-to",
        action=CommaJoined,
        default=defaults.log,
        metavar="TRACKER",
        help="experiment trackers of every pretraining and fine-tuning, each in its stage's folder: tensorboard, "
        "wandb, or both (repeat the flag or separate by commas); the report's task table is logged once",
    )
    parser.add_argument("--wandb-project", default=defaults.wandb_project, help="the W&B project (with --log wandb)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run no stage: write the report from the records --out-dir holds (a study whose weights are gone)",
    )
    parser.add_argument(
        "--gather",
        nargs="+",
        default=(),
        metavar="DIR",
        help="implies --report-only: first copy into --out-dir the records of the finished stages in these "
        "study folders (other hosts' or sessions' --out-dir; checked, no weights)",
    )
    return parser


def check_engine_flags(args) -> None:
    """The flags each engine takes: a ValueError naming the one that does not fit."""
    if args.engine == "local":
        for flag, value in (("--ray-address", args.ray_address), ("--stage-resources", args.stage_resources)):
            if value:
                raise ValueError(f"{flag} is for --engine ray")
        return
    from charfast.study.ray_engine import RAY_MISSING  # imports no Ray itself

    if importlib.util.find_spec("ray") is None:
        raise ValueError(RAY_MISSING)
    if args.jobs is not None:
        raise ValueError("--jobs is for --engine local; with ray, --stage-resources says what each stage takes")
    if args.device.startswith("cuda:"):
        raise ValueError(
            f"--device {args.device}: with --engine ray, Ray assigns each stage its GPUs; use --device cuda"
        )


def log_report(report: Path, config: StudyConfig) -> None:
    """The report's task table, once, as a summary of a run of its own in OUT_DIR/report."""
    text = report.read_text(encoding="utf-8")
    table = text.split(TASK_SECTION, 1)[1].split("\n## ", 1)[0] if TASK_SECTION in text else text
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("log", "wandb_project")}
    run = TrackedRun(report.parent / "report", settings, name="report", project=config.wandb_project)
    trackers = Trackers(parse_trackers(config.log), run)
    try:
        trackers.summary("report/tasks", TASK_SECTION + table)
    finally:
        trackers.close()


def run_study(study: Study, args):
    """Every stage of `study` on the engine asked for: an engines.Outcome."""
    stages = study.stages()
    if args.engine == "local":
        outcome = run_local(study.config, stages, run_stage)
    else:
        from charfast.study.ray_engine import run_ray  # only here: the local engine never imports Ray

        outcome = run_ray(study.config, stages, args.ray_address, args.stage_resources)
    outcome.report_skipped()
    return outcome


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
            jobs=1 if args.jobs is None else args.jobs,
            engine=args.engine,
            log=args.log,
            wandb_project=args.wandb_project,
        )
        check_engine_flags(args)
        study = Study(config)  # validates every setting first
        if args.report_only or args.gather:
            if args.gather:
                copied, unfinished = gather(study, [Path(folder) for folder in args.gather])
                print(f"charfast.study: gathered {copied} file(s) into {config.out_dir}")
                if unfinished:
                    print(f"charfast.study: {unfinished} unfinished run(s) left (each runs again, whole, in a piece)")
            probes, results = finished_records(study)
            failed = []
        else:
            outcome = run_study(study, args)
            probes = [Path(p) for stage, p in outcome.paths.items() if stage.kind == "probe"]
            results = [Path(p) for stage, p in outcome.paths.items() if stage.kind == "finetune"]
            failed = outcome.failed
        if probes or results:
            report, written = write_report(probes, results, Path(config.out_dir))
            print(f"wrote {report}" if written else f"unchanged: {report} (made from the same records)")
            if written and config.log:
                log_report(report, config)
        else:
            print("charfast.study: no stage the report reads finished; no report written")
        if failed:
            print(f"charfast.study: {len(failed)} stage(s) failed; the report covers the stages that finished")
            return 1
        return 0

    return run_cli("charfast.study", study)
