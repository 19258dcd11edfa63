"""The character-task study app, `python -m charfast.study`: pretrain char-aware and
baseline GPTs (charfast.gpt), fine-tune them on character tasks and compare exact-match
accuracy with confidence intervals."""
