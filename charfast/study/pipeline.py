"""The character-task study: its shared state and the dispatch of its stages.

For each tokenizer, seed and architecture (char vs its controls, charfast.gpt.archs):

    pretrain    python -m charfast.train on the corpus (resumed if interrupted)  stage_pretrain
    splits      words of the corpus split into train / heldout / heldout_rare / nonce and a
                fixed, seeded test set of task questions, frozen once per tokenizer  stage_splits
    probe       linear spelling probes on the pretrained model's input vectors    stage_probe
    fine-tune   the pretrained model on task examples of train words, loss on answers only:
                "mixed" (all tasks at once), then for each of the preset's solo tasks the
                mixed model further on that task alone; scored by greedy exact match and
                teacher-forced answer loss on the test set                         stage_finetune

Every stage writes a record into the output folder with what it was built from (the
pretraining's step and a digest of its weights, the frozen splits, the test set, the
settings) and is reused only when those inputs are still the same and its files intact
(charfast.study.records), so an interrupted study continues where it stopped and a changed
input is never silently mixed in (the folders: charfast.study.layout). The report
(charfast.study.report) then compares the archs per task and split with paired bootstrap
intervals over the shared test questions, averaged over seeds.
"""

from __future__ import annotations

from pathlib import Path

from charfast.atomic import remove_stale_temp_files
from charfast.gpt.checkpoint import load_checkpoint
from charfast.gpt.corpus_index import corpus_digest
from charfast.gpt.run import LoadedRun, load_run
from charfast.study import stage_finetune, stage_pretrain, stage_probe, stage_splits
from charfast.study.config import StudyConfig
from charfast.study.layout import StudyLayout
from charfast.study.presets import PRESETS
from charfast.study.records import model_digest, verified
from charfast.study.stages import Stage, study_stages

# Each kind of stage: the function of (study, *key) that runs it and returns its record's path.
STAGE_FUNCTIONS = {
    "pretrain": lambda study, *key: stage_pretrain.pretrain(study, *key) / "ckpt.pt",
    "splits": stage_splits.freeze_splits,
    "probe": stage_probe.probe_at,
    "finetune": stage_finetune.finetune_at,
}


class Study:
    """One study's settings (resolved and checked), preset and folder, and what its stages
    share: the corpus's digest, the pretrained weights a stage starts from."""

    def __init__(self, config: StudyConfig):
        config = config.resolved()
        config.validate()
        self.config = config
        self.preset = PRESETS[config.preset]
        self.layout = StudyLayout(Path(config.out_dir))
        self._corpus_digest: str | None = None

    def corpus_digest(self) -> str:
        """SHA-256 of the corpus's documents (names and texts), computed once per Study."""
        if self._corpus_digest is None:
            self._corpus_digest = corpus_digest(self.config.data)
        return self._corpus_digest

    def at(self, step: int) -> int | None:
        """The layout's name of a pretraining point: None for the last (the folders of a study
        without kept steps), else the step."""
        return None if step == self.preset.pretrain_steps else step

    def checkpoint_at(self, tokenizer: str, arch: str, seed: int, step: int) -> Path:
        """The pretrained weights the later stages of `step` start from."""
        if step == self.preset.pretrain_steps:
            return self.layout.pretrain_dir(tokenizer, arch, seed) / "ckpt.pt"  # it verifies itself on loading
        kept = self.layout.kept_checkpoint(tokenizer, arch, seed, step)
        return verified(kept, kept.with_suffix(".json"))

    @staticmethod
    def pretrained(ckpt: Path) -> tuple[dict, dict]:
        """(the checkpoint at `ckpt`, what a stage built on its weights records: their step and
        their digest), from one read of it."""
        state = load_checkpoint(ckpt)
        return state, {"pretrain_step": state["step"], "pretrain_weights_sha256": model_digest(state["model"])}

    def load_pretrained(self, ckpt: Path, state: dict | None = None) -> LoadedRun:
        """The pretrained run of `ckpt` (its checkpoint `state`, when read already) on this
        stage's device, its corpus read from this study's --data."""
        return load_run(ckpt.parent, ckpt=ckpt, device=self.config.device, data=self.config.data, state=state)

    def record_of(self, stage: Stage) -> Path:
        """Where a probe or fine-tuning stage writes its record (what the report reads)."""
        tokenizer, arch, seed, step = stage.key[:4]
        if stage.kind == "probe":
            return self.layout.probe(tokenizer, arch, seed, self.at(step))
        return self.layout.results(tokenizer, arch, seed, stage.key[4], self.at(step))

    def stages(self) -> list[Stage]:
        return study_stages(self.config, self.preset)

    def run_stage(self, stage: Stage) -> Path:
        """Run one stage (its dependencies done); the path of the record it wrote. The temp
        files a killed earlier try of it left on this host go first (a pretraining's own
        run sweeps its folder when it claims it)."""
        if stage.kind in ("probe", "finetune"):
            remove_stale_temp_files(self.record_of(stage).parent)
        elif stage.kind == "splits":
            remove_stale_temp_files(self.layout.tokenizer_dir(*stage.key))
            remove_stale_temp_files(self.layout.splits_dir(*stage.key))
        return STAGE_FUNCTIONS[stage.kind](self, *stage.key)


def run_stage(config: StudyConfig, stage: Stage) -> str:
    """A stage of the study of `config`, as an engine's worker runs it: the record's path."""
    return str(Study(config).run_stage(stage))
