"""Evaluation metrics for generated clips: frame consistency, CLIP-T, fidelity, motion, FVD.

See ``docs/EVALUATION.md`` and :mod:`evaluation.metrics`.
"""
