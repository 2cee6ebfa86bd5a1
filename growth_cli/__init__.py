"""The command line: `growth-launch` (or `python launch.py` in a checkout) and its configs.

The layer above growth, baselines and analysis: it composes a config from its package data
(`growth_cli/conf`, which a checkout also reaches as `conf/`), runs or submits it, and turns
every user error into one line and exit code 2.
"""
