"""`python -m charfast.study`: the study CLI (charfast.study.cli)."""

import sys

from charfast.extras import exit_if_missing

exit_if_missing("study", "python -m charfast.study")
from charfast.study.cli import main  # noqa: E402 - after the check, which names a missing extra

sys.exit(main())
