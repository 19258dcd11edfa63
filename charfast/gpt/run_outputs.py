"""What a finished training run leaves beside its checkpoint (rank 0): the loss plot
(loss.png), a sample (sample.txt) and a summary line; and, when a stop signal cut that
short, what it skipped."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from charfast.gpt.plotting import plot_loss_curve
from charfast.gpt.sampling import stream_sample
from charfast.gpt.stop_request import StopRequest

if TYPE_CHECKING:
    from charfast.gpt.trainer import Trainer


def finish(trainer: Trainer, stop: StopRequest) -> list[Path]:
    """Rank 0, after the last step is saved: the loss plot, a sample and a summary; a stop
    signal meanwhile ends it early. Returns the files written."""
    c = trainer.config
    records = trainer.metrics.records
    written = [trainer.metrics.path, trainer.ckpt_path]
    plot_path = trainer.out_dir / "loss.png"
    plot_loss_curve(records, plot_path, title=f"{c.arch} · {trainer.encoding.name}")
    written.append(plot_path)
    if c.sample_tokens and not stop.requested:
        model = trainer.sampling_model()
        if model.char_emb is not None:  # the weights are final now: one vocabulary pass, then lookups
            model.char_emb.inference_cache = True
        pieces = []
        for piece in stream_sample(model, trainer.encoding, c.sample_prompt, c.sample_tokens, c.temperature, c.top_k):
            if stop.requested:
                return written
            pieces.append(piece)
        sample = c.sample_prompt + "".join(pieces)
        sample_path = trainer.out_dir / "sample.txt"
        sample_path.write_text(sample, encoding="utf-8")
        written.append(sample_path)
        print("---- sample ----\n" + sample + "\n----------------")
    if stop.requested:
        return written
    if records:  # none when a resume of a finished run found no metrics.jsonl
        first, last = records[0], records[-1]
        print(
            f"train_loss {first['train_loss']:.3f} (step {first['step']}) -> {last['train_loss']:.3f} "
            f"(step {last['step']})" + (f", val_loss {last['val_loss']:.3f}" if "val_loss" in last else "")
        )
    print("wrote " + ", ".join(str(p) for p in written))
    return written


def stopped_after(trainer: Trainer, written: list[Path]) -> str:
    """What a stop signal left, in words: the saved step, and what the finish skipped."""
    saved = f"saved step {trainer.step} to {trainer.ckpt_path}"
    if trainer.step < trainer.config.max_steps:
        return f"{saved}; continue with --resume"
    skipped = [name for name in ("loss.png", "sample.txt") if trainer.out_dir / name not in written]
    skipped = [n for n in skipped if n != "sample.txt" or trainer.config.sample_tokens]
    return f"training had finished; {saved}" + (f"; skipped {', '.join(skipped)}" if skipped else "")
