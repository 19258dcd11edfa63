"""A study's report from its records alone, gathered from the folders its stages ran in.

A long study can outlive the host it ran on: its stages may run on several hosts, or in
several sessions on machines whose disks are not kept, and the weights they leave are large
(17 MB per run of the encoders preset: checkpoint and mixed weights). The report needs none
of them: it reads each probe's and fine-tuning's record (probe.json, results.json) and each
pretraining's metrics.jsonl and run.json (2 MB per run there, most of it every test
answer). `gather` copies those, the layout kept, from the folders of the pieces a study ran
in into one, a run once all its stages have finished; `finished_records` lists what a
folder holds for a study's stages, for the report (python -m charfast.study --report-only
[--gather DIR ...]).

What is gathered is checked first: each record against its own digest, its identity (run,
pretraining step) against the folder it sits in, its settings against the study's (so a
record of another preset is never mixed in), and one test set per tokenizer across all of
them. A run whose files both folders hold must hold the same bytes: two pretrainings of
one run are two runs, of which the report may read one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from charfast.atomic import atomic_write
from charfast.gpt.checkpoint import RUN_INFO_NAME
from charfast.gpt.failures import RunFailed
from charfast.study import stage_finetune, stage_probe
from charfast.study.records import read_record

if TYPE_CHECKING:
    from charfast.study.pipeline import Study
    from charfast.study.stages import Stage

PRETRAINING_FILES = ("metrics.jsonl", RUN_INFO_NAME)  # what the report reads of a pretraining


def _record_stages(study: Study) -> dict[tuple, list[Stage]]:
    """(tokenizer, arch, seed) -> the probe and fine-tuning stages of that run."""
    runs: dict[tuple, list[Stage]] = {}
    for stage in study.stages():
        if stage.kind in ("probe", "finetune"):
            runs.setdefault(stage.key[:3], []).append(stage)
    return runs


def finished_records(study: Study) -> tuple[list[Path], list[Path]]:
    """(probe records, fine-tuning records) the study's folder holds for its stages."""
    probes, results = [], []
    for stage in study.stages():
        if stage.kind in ("probe", "finetune") and (path := study.record_of(stage)).is_file():
            (probes if stage.kind == "probe" else results).append(path)
    return probes, results


def _check_record(study: Study, stage: Stage, path: Path) -> dict:
    """The record at `path`, checked to be `stage`'s under this study's settings."""
    record = read_record(path)
    tokenizer, arch, seed, step = stage.key[:4]
    identity = {"tokenizer": tokenizer, "arch": arch, "seed": seed, "pretrain_step": step}
    if stage.kind == "finetune":
        identity["finetuning"] = stage.key[4]
        settings = stage_finetune.settings_built_from(study, stage.key[4], seed)
    else:
        settings = stage_probe.settings_built_from(study)
    found = {k: record.get(k) for k in identity} | {k: record["built_from"].get(k) for k in settings}
    if found != identity | settings:
        wrong = sorted(k for k, v in (identity | settings).items() if found[k] != v)
        raise RunFailed(
            f"{path} is not a record of {stage} under --preset {study.config.preset} with these settings "
            f"(it differs in {', '.join(wrong)}): gather only folders of the same study"
        )
    return record


def gather(study: Study, sources: list[Path]) -> tuple[int, int]:
    """Copy into the study's folder the report's inputs that the study folders `sources`
    hold for its stages: the records of each run whose every probe and fine-tuning has
    finished there and its pretraining's metrics.jsonl and run.json, everything checked
    first (see the module's docstring); nothing is copied when any check fails. A run a
    source has not finished is left: it runs again, whole, in another piece (its weights do
    not travel). (files copied, unfinished runs left)."""
    root = study.layout.root
    copies: list[tuple[Path, Path]] = []
    unfinished = 0  # runs a source has begun but not finished
    test_sets: dict[str, dict[str, Path]] = {}  # tokenizer -> test_set_sha256 -> a record holding it
    for folder in sources:
        if not folder.is_dir():
            raise RunFailed(f"--gather: {folder} is not a folder (a study's --out-dir)")
    runs = _record_stages(study)
    for folder in [*sources, root]:
        for (tokenizer, arch, seed), stages in runs.items():
            found = [(stage, study.record_of(stage).relative_to(root)) for stage in stages]
            found = [(stage, rel) for stage, rel in found if (folder / rel).is_file()]
            if len(found) < len(stages):  # not finished there: it runs again, whole, elsewhere
                unfinished += bool(found) and folder != root
                continue
            pretraining = study.layout.pretrain_dir(tokenizer, arch, seed).relative_to(root)
            for stage, rel in found:
                record = _check_record(study, stage, folder / rel)
                digest = record["built_from"].get("test_set_sha256")
                if digest is not None:
                    test_sets.setdefault(tokenizer, {}).setdefault(digest, folder / rel)
            for name in PRETRAINING_FILES:
                if not (folder / pretraining / name).is_file():
                    raise RunFailed(f"{folder / pretraining / name} is missing: the report reads it")
            files = [rel for _, rel in found] + [pretraining / name for name in PRETRAINING_FILES]
            copies += [(folder / rel, root / rel) for rel in files if folder != root]
    for tokenizer, digests in test_sets.items():
        if len(digests) > 1:
            raise RunFailed(
                f"records of {tokenizer} were scored on different test sets ({', '.join(map(str, digests.values()))}): "
                "gather only folders of the same study"
            )
    planned: dict[Path, Path] = {}  # target -> its source; all checked first, so a refused gathering copies nothing
    for source, target in copies:
        other = planned.get(target, target if target.is_file() else None)
        if other is not None and other.read_bytes() != source.read_bytes():
            raise RunFailed(f"{source} and {other} differ: two runs of one stage; gather one of them only")
        if other is None:
            planned[target] = source
    for target, source in planned.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target) as f:
            f.write(source.read_bytes())
    return len(planned), unfinished
