"""`python -m charfast.train`: the GPT training CLI (charfast.gpt.train)."""
import sys

from charfast.gpt.train import main

if __name__ == "__main__":
    sys.exit(main())
