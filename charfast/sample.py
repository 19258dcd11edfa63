"""`python -m charfast.sample`: text from a charfast.train checkpoint (charfast.gpt.sample)."""

import sys

if __name__ == "__main__":
    from charfast.extras import exit_if_missing

    exit_if_missing("train", "python -m charfast.sample")
    from charfast.gpt.sample import main

    sys.exit(main())
