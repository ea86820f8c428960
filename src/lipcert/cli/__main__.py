"""``python -m lipcert.cli`` (same as ``lipcert`` and ``python -m lipcert``)."""

import sys

from lipcert.cli import main

sys.exit(main())
