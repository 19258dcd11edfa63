"""The GPT's archs, registered once: what each adds to the token and position embeddings,
the view of the char table its encoder reads, and its role in the study. Everything that
depends on the arch (the model, the settings' checks, the memory estimate, the study's
comparisons, report and plots) reads it from here, and a name that is not registered is an
error wherever it is met, never a silently dropped row. Imports no torch.

    char              the char encoder over each token's own chars (the treatment)
    baseline          nothing more (the reference GPT)
    baseline-matched  an extra id embedding of the char encoder's size (capacity control)
    char-shuffled     the char encoder over another token's chars (spelling control)

A new arch is one `register(Arch(...))` (and, for a new encoder, its module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

SHUFFLE_SEED = 0  # the permutation of arch "char-shuffled": one fixed table for every run
ROLES = ("treatment", "control", "reference")
ENCODERS = ("lstm",)  # the char encoders the model builds (charfast.CharEmbedding: the char-LSTM)


@dataclass(frozen=True)
class Arch:
    name: str
    role: str  # one of ROLES: the study compares the treatment with each control
    encoder: str | None = None  # one of ENCODERS over each token's chars; None: no char encoder
    table_view: Callable | None = None  # TokenCharTable -> the table the encoder reads (with an encoder)
    matched: bool = False  # an extra id embedding with the char encoder's parameter count
    compares: str = ""  # a control: what treatment - this arch measures, in words
    colour: str = "tab:gray"  # in the study's plots

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"Arch {self.name!r}: role must be one of {ROLES}, got {self.role!r}")
        if self.encoder is not None and self.encoder not in ENCODERS:
            raise ValueError(f"Arch {self.name!r}: encoder must be one of {ENCODERS} or None, got {self.encoder!r}")
        if (self.encoder is None) != (self.table_view is None):
            raise ValueError(f"Arch {self.name!r}: an encoder and its table_view go together")
        if self.role == "control" and not self.compares:
            raise ValueError(f"Arch {self.name!r}: a control says what the treatment minus it measures (compares)")


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


def capacity_control() -> str:
    """The control that matches the char encoder's parameters (the compute-equivalent gain's)."""
    (name,) = (a.name for a in REGISTRY.values() if a.role == "control" and a.matched)
    return name


def has_encoder(name: str) -> bool:
    return get(name).encoder is not None


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
