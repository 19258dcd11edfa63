"""The probe stage: the spelling probe (charfast.study.probe) of one pretrained run's input
vectors at one pretraining step, reused only when built from the same weights."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from charfast.study.probe import DEFAULT_PROBES, probe_model
from charfast.study.records import reusable, write_record

if TYPE_CHECKING:
    from charfast.study.pipeline import Study


def settings_built_from(study: Study) -> dict:
    """The part of a probe's built_from that its settings make (not its weights): the
    probes asked, named only when they are not the default ones (as older records hold them)."""
    return {} if study.preset.probes == DEFAULT_PROBES else {"probes": list(study.preset.probes)}


def probe_at(study: Study, tokenizer: str, arch: str, seed: int, step: int) -> Path:
    """The probe stage: probe.json of one pretrained run's weights at pretraining `step`,
    the spelling probe of its input vectors; reused only when it was built from those
    weights (their step and hash)."""
    path = study.layout.probe(tokenizer, arch, seed, study.at(step))
    ckpt = study.checkpoint_at(tokenizer, arch, seed, step)
    state, built_from = study.pretrained(ckpt)
    built_from |= settings_built_from(study)
    if reusable(path, built_from) is not None:
        return path
    run = study.load_pretrained(ckpt, state)
    record = {"tokenizer": tokenizer, "arch": arch, "seed": seed, "pretrain_step": step}
    record["n_vocab"] = run.encoding.n_vocab
    record["probe"] = probe_model(run.model, run.encoding, study.preset.probes)
    write_record(path, record, built_from)
    return path
