"""`python -m charfast.study`: the study CLI (charfast.study.cli)."""
import sys

from charfast.study.cli import main

sys.exit(main())
