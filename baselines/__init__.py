"""Baselines compared with PWMPR: IMP-C, RigL, PHEW."""
