"""Offline evaluation: full-ranking metrics, the baselines, and the harness that compares models on a split."""
