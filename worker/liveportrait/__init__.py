"""LivePortrait image expression editing: an independent PyTorch implementation.

Entry points: `Engine` (engine.py) for programs, `python -m worker.liveportrait` for people.
"""
