"""Distilled scoring: a strong teacher scores a stratified sample, a cheap student learns to predict it
and scores everything (student.py: the sample, the features, the student and its agreement)."""
