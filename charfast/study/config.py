"""The study's settings (`StudyConfig`): the command line's choices over a preset, each
checked, naming its flag, before any stage runs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from charfast.gpt import archs as gpt_archs
from charfast.gpt.distributed import resolve_device
from charfast.gpt.token_files import token_files_folder
from charfast.gpt.tokenizer import check_tokenizer_name
from charfast.gpt.tracking import parse_trackers
from charfast.study.presets import PRESETS
from charfast.study.tasks import TASKS


@dataclass
class StudyConfig:
    """Settings left None take the preset's value."""

    out_dir: str = "study"
    preset: str = "small"
    tokenizers: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    archs: tuple[str, ...] | None = None
    tasks: tuple[str, ...] | None = None
    solo_tasks: tuple[str, ...] | None = None
    data: str | None = None
    device: str = "auto"
    jobs: int = 1
    engine: str = "local"  # or "ray" (charfast.study.ray_engine): the device is then the cluster's to check
    log: str = ""  # experiment trackers of every training stage (charfast.gpt.tracking); no stage's identity
    wandb_project: str = "charfast"
    test_seed: int = 1234

    def resolved(self) -> StudyConfig:
        """This config with the preset's values in place of every None (an unknown preset is
        left for validate() to name). The preset's solo tasks are kept where they are among
        the tasks, and only when there are several tasks (one task is already trained alone)."""
        preset = PRESETS.get(self.preset)
        if preset is None:
            return self
        tasks = preset.tasks if self.tasks is None else tuple(self.tasks)
        solo_tasks = tuple(t for t in preset.solo_tasks if t in tasks and len(tasks) > 1)
        return dataclasses.replace(
            self,
            tokenizers=preset.tokenizers if self.tokenizers is None else tuple(self.tokenizers),
            archs=preset.archs if self.archs is None else tuple(self.archs),
            seeds=preset.seeds if self.seeds is None else tuple(self.seeds),
            tasks=tasks,
            solo_tasks=solo_tasks if self.solo_tasks is None else tuple(self.solo_tasks),
        )

    def validate(self) -> None:
        """Every setting, before any stage runs: a ValueError naming the flag."""
        if self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        for flag, values, known in (("--tasks", self.tasks, TASKS), ("--archs", self.archs, gpt_archs.names())):
            unknown = [v for v in values if v not in known]
            if not values or unknown:
                raise ValueError(f"{flag} must name some of {', '.join(known)}; unknown: {unknown}")
            if len(set(values)) != len(values):
                raise ValueError(f"{flag} names one twice: {list(values)}")
        outside = [t for t in self.solo_tasks if t not in self.tasks]
        if outside or len(set(self.solo_tasks)) != len(self.solo_tasks):
            raise ValueError(f"--solo-tasks must name some of --tasks, each once; not among them: {outside}")
        if self.solo_tasks and len(self.tasks) == 1:
            raise ValueError("--solo-tasks: with a single task the mixed fine-tuning already trains it alone")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"--seeds must be integers >= 0, got {list(self.seeds)}")
        if len(set(self.seeds)) != len(self.seeds) or len(set(self.tokenizers)) != len(self.tokenizers):
            raise ValueError("--seeds and --tokenizers must not repeat a value")
        if not self.tokenizers:
            raise ValueError("--tokenizers needs at least one tokenizer")
        for tokenizer in self.tokenizers:
            check_tokenizer_name(tokenizer)
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise ValueError(f"--jobs must be an integer >= 1, got {self.jobs!r}")
        if self.data is not None and not Path(self.data).exists():
            raise ValueError(f"--data: {self.data} does not exist")
        if token_files_folder(self.data) is not None:
            raise ValueError(f"--data: {self.data} holds token files; the study asks about words: give it text")
        if not self.out_dir.strip():
            raise ValueError(f"--out-dir must name a folder, got {self.out_dir!r}")
        if Path(self.out_dir).exists() and not Path(self.out_dir).is_dir():
            raise ValueError(f"--out-dir {self.out_dir} exists and is not a folder")
        parse_trackers(self.log)
        if self.engine == "local":
            resolve_device(self.device)
        elif self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"--device: with --engine ray, expected auto, cpu or cuda, got {self.device!r}")
