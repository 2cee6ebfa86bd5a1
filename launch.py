"""Entry point in a checkout: `python launch.py [overrides]` runs one job; `-m` runs a Hydra
multirun sweep. The same command installed from the wheel is `growth-launch`.

With no arguments it runs the embedded default: PWMPR on scikit-learn's digits with a small MLP.
"""

import sys

from growth_cli.launch import cli

if __name__ == "__main__":
    sys.exit(cli())
