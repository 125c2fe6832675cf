"""``python -m services.pulse --state-dir DIR --config FILE --run-start-seq N``: pulse's shell."""
import sys

from .shell import main

sys.exit(main())
