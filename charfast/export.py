"""`python -m charfast.export`: a charfast.train run as a plain Hugging Face GPT-2 folder
(charfast.gpt.export)."""

if __name__ == "__main__":
    from charfast.entry_point import run_entry_point

    run_entry_point("charfast.export", "export", "charfast.gpt.export")
