"""`python -m charfast.train`: the GPT training CLI (charfast.gpt.train)."""

import sys

if __name__ == "__main__":
    from charfast.extras import exit_if_missing

    exit_if_missing("train", "python -m charfast.train")
    from charfast.gpt.train import main

    sys.exit(main())
