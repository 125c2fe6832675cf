"""``python -m lvsbus_services.pulse --state-dir DIR --config FILE --run-start-seq N``: pulse's shell."""
import sys

from .shell import main

sys.exit(main())
