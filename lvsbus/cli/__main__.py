"""``python -m lvsbus.cli ARGS`` is ``lvsbus ARGS``."""
import sys

from lvsbus.cli import main

sys.exit(main())
