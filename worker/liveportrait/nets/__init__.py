"""The five LivePortrait networks, written to the official checkpoints' module paths."""
