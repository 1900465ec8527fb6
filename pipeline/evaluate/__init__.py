"""Evaluation: do proxy models trained on a curated subset beat ones trained on a random subset at an equal
token budget, across seeds? (`summary.py`: the comparison's arithmetic, pure.)"""
