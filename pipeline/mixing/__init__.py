"""Data-mixture optimisation: Aioli's online mixing law and its baselines, pure functions of the per-group
losses a proxy model's training reports (`aioli.py`)."""
