"""Experiment trackers beside metrics.jsonl: TensorBoard and Weights & Biases (`--log`).

A run hands its trackers the very records it writes to metrics.jsonl, so both show the
same numbers; this module only names them (METRIC_TAGS) and passes them on. Each tracker
lives in an optional extra and is imported only when asked for.

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
import json
import os
from pathlib import Path

from charfast.atomic import atomic_write
from charfast.extras import missing_modules

TRACKERS = ("tensorboard", "wandb")  # each is also the name of its pip extra
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


def parse_trackers(text: str) -> tuple[str, ...]:
    """The trackers a --log value names ('tensorboard', 'wandb', both comma-separated, or ''),
    each checked to be installed: a ValueError naming the flag, or the extra to install."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        raise ValueError(
            f"--log {text!r}: unknown tracker {unknown[0]!r}; expected {' or '.join(TRACKERS)} (or both, "
            "comma-separated)"
        )
    for name in names:
        if missing_modules(name):
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


class Trackers:
    """The trackers of one run, on the process that logs (rank 0).

    folder: the run's folder; name: how the trackers show the run (W&B's run name;
    TensorBoard names a run by its folder); hyperparameters: the run's settings;
    resume_step: the step the run resumes after (None: a new run); wandb_id: the W&B run
    to continue (from the checkpoint); project: W&B's; replay: on a resume, the
    metrics.jsonl records up to the checkpoint, logged to W&B again where it lacks them.
    """

    def __init__(
        self,
        names: tuple[str, ...],
        folder: Path,
        hyperparameters: dict,
        resume_step: int | None = None,
        name: str | None = None,
        wandb_id: str | None = None,
        project: str = "charfast",
        replay: list[dict] = (),
    ):
        self.tensorboard = None
        self.wandb_run = None
        plain = {key: _plain(value) for key, value in hyperparameters.items()}
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams

            # Hide what an earlier session logged from the first step this one logs: on a
            # resume, the steps after the checkpoint; on a new run in a folder that a run
            # killed before its first checkpoint left, all of them.
            self.tensorboard = SummaryWriter(str(folder / "tb"), purge_step=(resume_step or 0) + 1)
            for summary in hparams(plain, {METRIC_TAGS["val_loss"]: 0.0}):  # the value is never written
                self.tensorboard.file_writer.add_summary(summary)
        if "wandb" in names:
            import wandb

            folder.mkdir(parents=True, exist_ok=True)
            self.wandb_run = wandb.init(
                project=project,
                name=name,
                id=wandb_id,
                resume="allow" if wandb_id else None,
                dir=str(folder),
                config=plain,
                mode=wandb_mode(),
                settings=wandb.Settings(console="off", silent=True),
            )
            self._logged_note = folder / "wandb" / LOGGED_NOTE
            has = max(self.wandb_run.step, _cleanly_logged(self._logged_note, self.wandb_run.id))
            self._logged_note.unlink(missing_ok=True)  # a kill of this session must not leave it behind
            for record in replay:
                if record["step"] > has:
                    self.wandb_run.log(_tagged(record), step=record["step"])

    @property
    def wandb_id(self) -> str | None:
        return None if self.wandb_run is None else self.wandb_run.id

    def metrics(self, record: dict) -> None:
        """One metrics.jsonl record (its "step" and the numbers of METRIC_TAGS it holds)."""
        self.scalars(record["step"], _tagged(record))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Numbers at `step`, by tag."""
        if self.tensorboard is not None:
            for tag, value in values.items():
                self.tensorboard.add_scalar(tag, value, step)
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=step)

    def text(self, tag: str, text: str, step: int) -> None:
        """Text at `step` (a sample, a table in Markdown)."""
        if self.tensorboard is not None:
            # TensorBoard renders Markdown: indent plain text as a code block to keep its lines.
            self.tensorboard.add_text(tag, "    " + text.replace("\n", "\n    "), step)
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({tag: wandb.Html(f"<pre>{_escape(text)}</pre>")}, step=step)

    def summary(self, tag: str, markdown: str) -> None:
        """A table of the whole run, logged once (TensorBoard: text at step 0; W&B: the run's
        summary)."""
        if self.tensorboard is not None:
            self.tensorboard.add_text(tag, markdown, 0)
        if self.wandb_run is not None:
            self.wandb_run.summary[tag] = markdown

    def flush(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb_run is not None:
            step, run_id = self.wandb_run.step, self.wandb_run.id
            self.wandb_run.finish()  # everything logged is on disk (or sent) once it returns
            with atomic_write(self._logged_note) as f:
                f.write(json.dumps({"id": run_id, "step": step}).encode("utf-8"))


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
