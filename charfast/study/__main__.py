"""`python -m charfast.study`: the study CLI (charfast.study.cli)."""

from charfast.entry_point import run_entry_point

run_entry_point("charfast.study", "study", "charfast.study.cli")
