"""`python -m charfast.sample`: text from a charfast.train checkpoint (charfast.gpt.sample)."""

if __name__ == "__main__":
    from charfast.entry_point import run_entry_point

    run_entry_point("charfast.sample", "train", "charfast.gpt.sample")
