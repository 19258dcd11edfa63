"""The study as a graph of stages: what each computes, what it waits for, what it needs.

    pretrain(t, a, s)                one pretraining trajectory, its kept steps included
    splits(t)                        the word splits and test set of tokenizer t (CPU)
    probe(t, a, s, step)             the spelling probe of the weights at that step
    finetune(t, a, s, step, mixed)   the mixed fine-tuning from those weights
    finetune(t, a, s, step, task)    each solo fine-tuning, from the mixed weights

A stage depends only on the stages whose files it reads, so there is no barrier: the
critical path is pretrain -> mixed -> solo. Every stage is a function of (config, key)
that writes its record in the study's folder and returns that record's path; an engine
(charfast.study.engines) runs them in any order the dependencies allow.
"""

from __future__ import annotations

from dataclasses import dataclass

from charfast.study.layout import MIXED

KINDS = ("pretrain", "splits", "probe", "finetune")


@dataclass(frozen=True)
class Stage:
    kind: str  # one of KINDS
    key: tuple  # (t, a, s) | (t,) | (t, a, s, step) | (t, a, s, step, fine-tuning)
    deps: tuple[Stage, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.kind}({', '.join(map(str, self.key))})"

    def __str__(self) -> str:
        return self.name


def study_stages(config, preset) -> list[Stage]:
    """Every stage of a resolved StudyConfig under its Preset, each after its dependencies."""
    stages: list[Stage] = []
    pretrains = {}
    for tokenizer in config.tokenizers:
        for seed in config.seeds:
            for arch in config.archs:
                pretrains[tokenizer, arch, seed] = Stage("pretrain", (tokenizer, arch, seed))
    stages += pretrains.values()
    splits = {}
    for tokenizer in config.tokenizers:  # from the tokenizer's first run (its tokenizer and corpus)
        first = pretrains[tokenizer, config.archs[0], config.seeds[0]]
        splits[tokenizer] = Stage("splits", (tokenizer,), (first,))
    stages += splits.values()
    for (tokenizer, arch, seed), pretrain in pretrains.items():
        for step in preset.pretrain_points:
            stages.append(Stage("probe", (tokenizer, arch, seed, step), (pretrain,)))
            mixed = Stage("finetune", (tokenizer, arch, seed, step, MIXED), (pretrain, splits[tokenizer]))
            stages.append(mixed)
            stages += [
                Stage("finetune", (tokenizer, arch, seed, step, task), (mixed, splits[tokenizer]))
                for task in config.solo_tasks
            ]
    return stages


def descendants(stages: list[Stage], failed: Stage) -> list[Stage]:
    """The stages that wait, directly or not, for `failed`, in graph order."""
    below: set[Stage] = {failed}
    for stage in stages:  # dependencies come first, so one pass finds them all
        if any(dep in below for dep in stage.deps):
            below.add(stage)
    return [stage for stage in stages if stage in below and stage != failed]
