"""``python -m train --recipe recipes/soda.yaml --data DIR --model tiny --steps N``."""

import sys

from train.cli import main

sys.exit(main())
