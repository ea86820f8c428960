"""``python -m lipcert`` (also ``torchrun --nproc_per_node=2 -m lipcert train ...``)."""

import sys

from lipcert.cli import main

sys.exit(main())
