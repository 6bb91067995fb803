"""Training loops and their CLI (single process; torchrun where noted)."""
