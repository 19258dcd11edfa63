"""The character-task study app, `python -m charfast.study`: pretrain char-aware GPTs and
two controls (charfast.gpt) over a vocabulary sweep, probe their input vectors for
spelling, fine-tune them on character tasks with learning curves, and compare exact-match
accuracy with confidence intervals."""
