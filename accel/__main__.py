"""``python -m accel`` (and ``torchrun -m accel``) runs the command line."""

import sys

from .cli import main

sys.exit(main())
