"""The GPT's archs, registered once: what each adds to the token and position embeddings,
the view of the char table its encoder reads, and its role in the study. Everything that
depends on the arch (the model, the settings' checks, the memory estimate, the study's
comparisons, report and plots) reads it from here, and a name that is not registered is an
error wherever it is met, never a silently dropped row. Imports no torch.

    char              the char encoder over each token's own chars (the treatment)
    baseline          nothing more (the reference GPT)
    baseline-matched  an extra id embedding of the char encoder's size (capacity control)
    char-shuffled     the char encoder over another token's chars (spelling control)
    char-bag, char-posbag, char-ngram, char-ngram-exact, char-cnn
                      a cheaper encoder in the char-LSTM's place, its parameters matched to
                      the char-LSTM's (alternatives: is the LSTM needed?)
    char-ngram-large, baseline-matched-large
                      hashed n-grams with 8x the budget, and an id embedding of that size

A new arch is one `register(Arch(...))` (and, for a new encoder, its module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from charfast.encoder_names import ENCODERS

SHUFFLE_SEED = 0  # the permutation of arch "char-shuffled": one fixed table for every run
# alternative: another way to the treatment's end (a cheaper encoder), weighed against it
ROLES = ("treatment", "control", "reference", "alternative")


@dataclass(frozen=True)
class Arch:
    name: str
    role: str  # one of ROLES: the study compares the treatment with each control
    encoder: str | None = None  # one of ENCODERS over each token's chars; None: no char encoder
    table_view: Callable | None = None  # TokenCharTable -> the table the encoder reads (with an encoder)
    matched: bool = False  # an extra id embedding with the char encoder's parameter count
    # The parameters of its encoder or matched embedding, in char-LSTMs (of the run's
    # char_dim and char_hidden): a cheaper encoder is sized to match them.
    budget: float = 1.0
    compares: str = ""  # a control or an alternative: what treatment - this arch measures, in words
    colour: str = "tab:gray"  # in the study's plots

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"Arch {self.name!r}: role must be one of {ROLES}, got {self.role!r}")
        if self.encoder is not None and self.encoder not in ENCODERS:
            raise ValueError(f"Arch {self.name!r}: encoder must be one of {ENCODERS} or None, got {self.encoder!r}")
        if (self.encoder is None) != (self.table_view is None):
            raise ValueError(f"Arch {self.name!r}: an encoder and its table_view go together")
        if self.role in ("control", "alternative") and not self.compares:
            raise ValueError(f"Arch {self.name!r}: a {self.role} says what the treatment minus it measures (compares)")
        if not self.budget > 0 or (self.encoder == "lstm" and self.budget != 1):
            raise ValueError(f"Arch {self.name!r}: budget must be > 0 (1 for the char-LSTM), got {self.budget!r}")


REGISTRY: dict[str, Arch] = {}


def register(arch: Arch) -> Arch:
    if arch.name in REGISTRY:
        raise ValueError(f"arch {arch.name!r} is registered already")
    REGISTRY[arch.name] = arch
    return arch


def get(name: str, what: str = "arch") -> Arch:
    """The registered arch `name`; a ValueError naming `what` asked for it otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"{what} must be one of {', '.join(REGISTRY)}, got {name!r}")
    return REGISTRY[name]


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def treatment() -> str:
    (name,) = (a.name for a in REGISTRY.values() if a.role == "treatment")
    return name


def controls() -> tuple[str, ...]:
    return tuple(a.name for a in REGISTRY.values() if a.role == "control")


def alternatives() -> tuple[str, ...]:
    return tuple(a.name for a in REGISTRY.values() if a.role == "alternative")


def compared() -> tuple[str, ...]:
    """Every arch the study weighs against the treatment: the controls, then the alternatives."""
    return controls() + alternatives()


def capacity_control() -> str:
    """The control that matches the char encoder's parameters (the compute-equivalent gain's)."""
    (name,) = (a.name for a in REGISTRY.values() if a.role == "control" and a.matched)
    return name


register(Arch("char", "treatment", encoder="lstm", table_view=lambda table: table, colour="tab:blue"))
register(Arch("baseline", "reference"))
register(
    Arch(
        "baseline-matched",
        "control",
        matched=True,
        compares="real spelling plus capacity, the headline",
        colour="tab:orange",
    )
)
register(
    Arch(
        "char-shuffled",
        "control",
        encoder="lstm",
        table_view=lambda table: table.shuffled(SHUFFLE_SEED),
        compares="real spelling against the same encoder fed another token's chars",
        colour="tab:green",
    )
)

_CHEAP_ENCODERS = {
    "bag": ("mean of char embeddings", "tab:red"),
    "posbag": ("(char, position) slots", "tab:purple"),
    "ngram": ("hashed char n-grams", "tab:brown"),
    "ngram-exact": ("char n-grams without collisions", "tab:pink"),
    "cnn": ("a char-CNN with a highway layer", "tab:olive"),
}
for _encoder, (_what, _colour) in _CHEAP_ENCODERS.items():
    register(
        Arch(
            f"char-{_encoder}",
            "alternative",
            encoder=_encoder,
            table_view=lambda table: table,
            compares=f"the char-LSTM against {_what} at equal parameters",
            colour=_colour,
        )
    )
register(
    Arch(
        "char-ngram-large",
        "alternative",
        encoder="ngram",
        table_view=lambda table: table,
        budget=8.0,
        compares="the char-LSTM against hashed char n-grams with 8x its parameters",
        colour="tab:cyan",
    )
)
register(
    Arch(
        "baseline-matched-large",
        "alternative",
        matched=True,
        budget=8.0,
        compares="the char-LSTM against an id embedding of char-ngram-large's size (its capacity control)",
        colour="gold",
    )
)
