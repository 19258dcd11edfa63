"""Benchmark results as ratios within each group, shared by the run's terminal summary
(conftest.py) and the Markdown report of a saved run (report.py)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Result:
    group: str
    name: str  # the test's name with its parameters, e.g. test_char_embedding_forward_backward[cpp]
    median: float  # seconds
    iqr: float  # seconds
    rounds: int
    extra_info: dict = field(default_factory=dict)

    @property
    def variant(self) -> str:
        """The parameter id (e.g. "cpp"), or the test's name when it has none."""
        return self.name.split("[", 1)[1].rstrip("]") if "[" in self.name else self.name

    @property
    def own_ratios(self) -> dict:
        """Ratios the benchmark measured itself (extra_info keys like char_over_baseline)."""
        return {key: value for key, value in self.extra_info.items() if "_over_" in key and value is not None}


def by_group(results: list[Result]) -> dict[str, list[tuple[Result, float]]]:
    """{group: [(result, its median / the group's fastest median)], fastest first}, groups
    in the order their first result came."""
    groups: dict[str, list[Result]] = {}
    for result in results:
        groups.setdefault(result.group or "(no group)", []).append(result)
    ranked = {}
    for group, members in groups.items():
        members = sorted(members, key=lambda r: r.median)
        ranked[group] = [(r, r.median / members[0].median) for r in members]
    return ranked
