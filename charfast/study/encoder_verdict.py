"""Is the LSTM needed? The encoders study's decision rule, applied to its records.

Fixed before any run (RESULTS.md states it the same way). For each cheap encoder arch E
(the alternatives with an encoder at the char-LSTM's parameter count) and each vocabulary,
the primary endpoints, each as the char-LSTM's advantage over E:

    spell    held-out exact match after the mixed fine-tuning    char - E
    count    held-out exact match, count alone when it ran (else mixed)   char - E
    probe    the first-letter probe's held-out score             char - E
    loss     the pretraining's last validation loss              E - char (nats)

with a 95% interval that resamples seeds and examples (stats.seed_and_example_bootstrap).
An endpoint reads "within" when the interval's upper end is below the margin (E is at most
MARGIN worse), "below" when its lower end is above the margin (E is worse by more), else
"undecided". The verdict: "not needed" when some E is within on every endpoint at every
vocabulary; "needed" when every E is below on some endpoint at some vocabulary; else
"undecided"; none ("n/a") before every endpoint has run at both vocabularies with 3 seeds.
A single seed's loss (one number, nothing to resample) gets no interval and no reading.
"""

from __future__ import annotations

import numpy as np

from charfast.gpt import archs
from charfast.study.analysis import paired_seeds, runs_by_arch, score_matrix, tokenizers_by_size
from charfast.study.layout import MIXED
from charfast.study.presets import PRESETS
from charfast.study.stats import seed_and_example_bootstrap

DESIGN = PRESETS["encoders"]  # the vocabularies and seeds the rule was fixed for
MARGIN = {"spell": 0.05, "count": 0.05, "probe": 0.05, "loss": 0.05}  # 5 points; 0.05 nats
ENDPOINTS = tuple(MARGIN)


def cheap_encoders() -> tuple[str, ...]:
    """The archs the rule weighs against the char-LSTM: a cheaper encoder at its budget."""
    return tuple(
        name for name in archs.alternatives() if archs.get(name).encoder is not None and archs.get(name).budget == 1
    )


def _reading(low: float, high: float, margin: float) -> str:
    return "within" if high < margin else "below" if low > margin else "undecided"


def _advantage(endpoint: str, tokenizer: str, encoder: str, results, probes, val_loss) -> np.ndarray | None:
    """[seeds, examples] of the char-LSTM's advantage over `encoder` on `endpoint`, paired by
    seed and example; None when either side did not run (or not with the same seeds)."""
    char = archs.treatment()
    if endpoint in ("spell", "count"):
        finetuning = MIXED
        if endpoint == "count" and runs_by_arch(results, tokenizer, "count"):
            finetuning = "count"
        runs = runs_by_arch(results, tokenizer, finetuning)
        if not paired_seeds(runs, encoder):
            return None
        a, b = (score_matrix(runs[arch], endpoint, "heldout", "correct") for arch in (char, encoder))
        return a - b if a.size else None
    if endpoint == "probe":
        runs = runs_by_arch(probes, tokenizer)
        if not paired_seeds(runs, encoder):
            return None
        a, b = (np.asarray([r["probe"]["first_letter"]["score"] for r in runs[arch]]) for arch in (char, encoder))
        return a - b
    seeds = sorted({seed for (t, arch, seed) in val_loss if t == tokenizer and arch == char})
    if not seeds or any((tokenizer, encoder, seed) not in val_loss for seed in seeds):
        return None
    return np.asarray([[val_loss[(tokenizer, encoder, s)] - val_loss[(tokenizer, char, s)]] for s in seeds])


def verdict_rows(results: list[dict], probes: list[dict], val_loss: dict[tuple[str, str, int], float]) -> list[dict]:
    """One row per (vocabulary, cheap encoder, endpoint) that ran: the char-LSTM's advantage
    with its interval, the margin and the reading. val_loss: (tokenizer, arch, seed) -> the
    pretraining's last validation loss."""
    rows = []
    for tokenizer in tokenizers_by_size([*results, *probes]):
        for encoder in cheap_encoders():
            for endpoint in ENDPOINTS:
                advantage = _advantage(endpoint, tokenizer, encoder, results, probes, val_loss)
                if advantage is None:
                    continue
                row = {"tokenizer": tokenizer, "encoder": encoder, "endpoint": endpoint, "seeds": advantage.shape[0]}
                if advantage.size == 1:  # one seed's loss: nothing to resample, no interval to read
                    estimate = float(advantage.item())
                    row |= {"advantage": [estimate, None, None], "reading": "n/a (one seed, no interval)"}
                else:
                    interval = seed_and_example_bootstrap(advantage)
                    row |= {
                        "advantage": [interval.estimate, interval.low, interval.high],
                        "reading": _reading(interval.low, interval.high, MARGIN[endpoint]),
                    }
                rows.append(row | {"margin": MARGIN[endpoint]})
    return rows


def verdict(rows: list[dict]) -> str:
    """The rule's answer in one line, from verdict_rows: "n/a" unless every cheap encoder
    ran with the char-LSTM on every endpoint at each of the design's vocabularies with all
    its seeds (a study half done, or narrowed, gives no verdict)."""
    tokenizers = DESIGN.tokenizers
    expected = {(t, e, p) for t in tokenizers for e in cheap_encoders() for p in ENDPOINTS}
    readings = {
        (r["tokenizer"], r["encoder"], r["endpoint"]): r["reading"] for r in rows if r["seeds"] == len(DESIGN.seeds)
    }
    if set(readings) != expected:
        return (
            "n/a: the rule needs every cheap encoder beside char on every endpoint at "
            f"{' and '.join(tokenizers)} with {len(DESIGN.seeds)} seeds ({len(expected - set(readings))} "
            f"of {len(expected)} missing)"
        )

    def everywhere(encoder: str, reading: str) -> list[bool]:
        return [readings[(t, encoder, p)] == reading for t in tokenizers for p in ENDPOINTS]

    enough = [e for e in cheap_encoders() if all(everywhere(e, "within"))]
    if enough:
        stays = "stays" if len(enough) == 1 else "stay"
        return f"the LSTM is not needed: {', '.join(enough)} {stays} within the margin on every primary endpoint"
    short = {e for e in cheap_encoders() if any(everywhere(e, "below"))}
    if short == set(cheap_encoders()):
        return "the LSTM is needed: every cheap encoder falls below it by more than the margin on some primary endpoint"
    never_short = [e for e in cheap_encoders() if e not in short]
    falls = "falls" if len(never_short) == 1 else "fall"
    return (
        "undecided: no cheap encoder stays within the margin everywhere, and "
        f"{', '.join(never_short)} never {falls} clearly below it"
    )
