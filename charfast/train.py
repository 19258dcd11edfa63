"""`python -m charfast.train`: the GPT training CLI (charfast.gpt.train)."""

if __name__ == "__main__":
    from charfast.entry_point import run_entry_point

    run_entry_point("charfast.train", "train", "charfast.gpt.train")
