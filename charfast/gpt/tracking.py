"""Experiment trackers beside metrics.jsonl: TensorBoard and Weights & Biases (`--log`).

A run hands its trackers the very records it writes to metrics.jsonl, so both show the
same numbers; this module only names them (METRIC_TAGS) and passes them on. Each tracker
is one Tracker class, registered under its --log name; it lives in an optional extra of
that name and is imported only when asked for. Another tracker (MLflow, CSV) is one more
class and an extra.

- TensorBoard writes event files into <run folder>/tb. A resumed run writes into the same
  folder, and its first event hides every older event from the step it resumes at on
  (purge_step): the steps a killed run logged after its last checkpoint are replayed, and
  the reader shows each step once.
- W&B logs into <run folder>/wandb, offline unless the user's W&B settings say otherwise
  (WANDB_MODE, or a mode in W&B's settings file). The run id is kept in the checkpoint, so
  a resume continues the same W&B run. W&B's writer holds records in memory until a 32 KiB
  block fills or the run finishes, and offers no flush: a run killed with -9 loses what it
  held. So a session that finishes its W&B run cleanly notes the last step it logged
  (wandb/charfast-logged.json), and a resume logs metrics.jsonl's records up to its
  checkpoint again (`replay`) from the step after the last one known to be held: every
  step up to a checkpoint reaches W&B. (W&B drops a step lower than the last one it holds,
  so a step the killed session did write keeps that session's values: the same losses, its
  own timings.)
"""

from __future__ import annotations

import configparser
import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from charfast.atomic import atomic_write
from charfast.extras import not_installed

LOGGED_NOTE = "charfast-logged.json"  # in <folder>/wandb: the last step a cleanly closed W&B session logged

# metrics.jsonl key -> the tag a tracker shows it under
METRIC_TAGS = {
    "train_loss": "train/loss",
    "val_loss": "val/loss",
    "lr": "train/lr",
    "grad_norm": "train/grad_norm",
    "char_grad_share": "train/char_grad_share",
    "ms_per_step": "perf/ms_per_step",
    "tokens_per_s": "perf/tokens_per_s",
    "mfu": "perf/mfu",
}


@dataclass(frozen=True)
class TrackedRun:
    """What a tracker is told about the run it logs.

    folder: the run's folder; hyperparameters: its settings; resume_step: the step it
    resumes after (None: a new run); name: how trackers show it (W&B's run name;
    TensorBoard names a run by its folder); project: W&B's; resume_state: what the
    trackers' resume_state() gave when the checkpoint was written (e.g. the W&B run to
    continue); replay: on a resume, the metrics.jsonl records up to the checkpoint, for
    trackers that may lack some of them.
    """

    folder: Path
    hyperparameters: dict
    resume_step: int | None = None
    name: str | None = None
    project: str = "charfast"
    resume_state: dict = field(default_factory=dict)
    replay: Sequence[dict] = ()


class Tracker:
    """One experiment tracker of a run, on the process that logs (rank 0). A new tracker is
    a subclass registered under its --log name (@register_tracker); it imports its modules
    in __init__, so only the trackers asked for are loaded."""

    modules: tuple[str, ...] = ()  # what it imports: checked before the run starts
    resume_keys: tuple[str, ...] = ()  # the checkpoint entries its resume_state() fills

    def __init__(self, run: TrackedRun):
        self.run = run

    def log(self, step: int, values: dict[str, float]) -> None:
        """Numbers at `step`, by tag."""
        raise NotImplementedError

    def text(self, tag: str, text: str, step: int) -> None:
        """Text at `step` (a sample, a table in Markdown)."""

    def summary(self, tag: str, markdown: str) -> None:
        """A table of the whole run, logged once."""

    def flush(self) -> None:
        """Everything logged so far on disk (called before each checkpoint)."""

    def close(self) -> None:
        """The run's end (also of a session a signal stopped)."""

    def resume_state(self) -> dict:
        """What a resume needs to continue this tracker's run, kept in the checkpoint
        (plain values under resume_keys)."""
        return {}


TRACKERS: dict[str, type[Tracker]] = {}  # --log name -> its class


def register_tracker(name: str):
    """Class decorator: the tracker --log NAME selects."""

    def register(cls: type[Tracker]) -> type[Tracker]:
        TRACKERS[name] = cls
        return cls

    return register


def tracker_resume_keys() -> tuple[str, ...]:
    """The checkpoint entries that hold trackers' resume states."""
    return tuple(key for cls in TRACKERS.values() for key in cls.resume_keys)


def parse_trackers(text: str) -> tuple[str, ...]:
    """The trackers a --log value names (comma-separated, or ''), each checked to be
    installed: a ValueError naming the flag, or the extra to install."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        raise ValueError(
            f"--log {text!r}: unknown tracker {unknown[0]!r}; expected one of {', '.join(TRACKERS)} (or several, "
            "comma-separated)"
        )
    for name in names:
        if not_installed(TRACKERS[name].modules):
            raise ValueError(
                f"--log {name} needs the '{name}' extra, which is not installed; pip install 'charfast[{name}]'"
            )
    return names


def wandb_mode() -> str:
    """'offline' unless the user's W&B settings say otherwise: WANDB_MODE, or a `mode` in the
    project's (wandb/settings) or the user's W&B settings file (`wandb offline` writes one;
    `wandb online` only clears it, so going online takes WANDB_MODE=online or that line)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    config_dir = Path(os.environ.get("WANDB_CONFIG_DIR") or Path.home() / ".config" / "wandb")
    for settings in (Path("wandb") / "settings", config_dir / "settings"):
        parser = configparser.ConfigParser()
        try:
            parser.read(settings)
        except configparser.Error:
            continue
        mode = parser.get("default", "mode", fallback=None)
        if mode:
            return mode
    return "offline"


@register_tracker("tensorboard")
class TensorBoardTracker(Tracker):
    """Event files in <run folder>/tb."""

    modules = ("tensorboard",)

    def __init__(self, run: TrackedRun):
        super().__init__(run)
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        # Hide what an earlier session logged from the first step this one logs: on a
        # resume, the steps after the checkpoint; on a new run in a folder that a run
        # killed before its first checkpoint left, all of them.
        self.writer = SummaryWriter(str(run.folder / "tb"), purge_step=(run.resume_step or 0) + 1)
        for summary in hparams(run.hyperparameters, {METRIC_TAGS["val_loss"]: 0.0}):  # the value is never written
            self.writer.file_writer.add_summary(summary)

    def log(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def text(self, tag: str, text: str, step: int) -> None:
        # TensorBoard renders Markdown: indent plain text as a code block to keep its lines.
        self.writer.add_text(tag, "    " + text.replace("\n", "\n    "), step)

    def summary(self, tag: str, markdown: str) -> None:
        self.writer.add_text(tag, markdown, 0)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


@register_tracker("wandb")
class WandbTracker(Tracker):
    """A W&B run in <run folder>/wandb, continued by a resume (its id in the checkpoint)."""

    modules = ("wandb",)
    resume_keys = ("wandb_run_id",)

    def __init__(self, run: TrackedRun):
        super().__init__(run)
        import wandb

        run.folder.mkdir(parents=True, exist_ok=True)
        run_id = run.resume_state.get("wandb_run_id")
        self.wandb_run = wandb.init(
            project=run.project,
            name=run.name,
            id=run_id,
            resume="allow" if run_id else None,
            dir=str(run.folder),
            config=run.hyperparameters,
            mode=wandb_mode(),
            settings=wandb.Settings(console="off", silent=True),
        )
        self._logged_note = run.folder / "wandb" / LOGGED_NOTE
        has = max(self.wandb_run.step, _cleanly_logged(self._logged_note, self.wandb_run.id))
        self._logged_note.unlink(missing_ok=True)  # a kill of this session must not leave it behind
        for record in run.replay:
            if record["step"] > has:
                self.wandb_run.log(_tagged(record), step=record["step"])

    def log(self, step: int, values: dict[str, float]) -> None:
        self.wandb_run.log(values, step=step)

    def text(self, tag: str, text: str, step: int) -> None:
        import wandb

        self.wandb_run.log({tag: wandb.Html(f"<pre>{_escape(text)}</pre>")}, step=step)

    def summary(self, tag: str, markdown: str) -> None:
        self.wandb_run.summary[tag] = markdown

    def close(self) -> None:
        step, run_id = self.wandb_run.step, self.wandb_run.id
        self.wandb_run.finish()  # everything logged is on disk (or sent) once it returns
        with atomic_write(self._logged_note) as f:
            f.write(json.dumps({"id": run_id, "step": step}).encode("utf-8"))

    def resume_state(self) -> dict:
        return {"wandb_run_id": self.wandb_run.id}


class Trackers:
    """The trackers --log names, for one run: each call goes to every one of them."""

    def __init__(self, names: Sequence[str], run: TrackedRun):
        plain = {key: _plain(value) for key, value in run.hyperparameters.items()}
        run = dataclasses.replace(run, hyperparameters=plain)
        self.trackers = [TRACKERS[name](run) for name in names]

    def metrics(self, record: dict) -> None:
        """One metrics.jsonl record (its "step" and the numbers of METRIC_TAGS it holds)."""
        self.log(record["step"], _tagged(record))

    def log(self, step: int, values: dict[str, float]) -> None:
        for tracker in self.trackers:
            tracker.log(step, values)

    def text(self, tag: str, text: str, step: int) -> None:
        for tracker in self.trackers:
            tracker.text(tag, text, step)

    def summary(self, tag: str, markdown: str) -> None:
        for tracker in self.trackers:
            tracker.summary(tag, markdown)

    def flush(self) -> None:
        for tracker in self.trackers:
            tracker.flush()

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()

    def resume_state(self) -> dict:
        return {key: value for tracker in self.trackers for key, value in tracker.resume_state().items()}


def _cleanly_logged(note: Path, run_id: str) -> int:
    """The last step a cleanly finished session of W&B run `run_id` logged (0: none known)."""
    try:
        logged = json.loads(note.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    return logged.get("step", 0) if isinstance(logged, dict) and logged.get("id") == run_id else 0


def _tagged(record: dict) -> dict[str, float]:
    """The numbers of a metrics.jsonl record by the tags the trackers show them under."""
    return {tag: float(record[key]) for key, tag in METRIC_TAGS.items() if key in record}


def _plain(value):
    """A hyperparameter as both trackers take it: a number, a string or a bool."""
    return value if isinstance(value, (int, float, str, bool)) else str(value)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
