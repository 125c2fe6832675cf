"""``python -m lvsbus_services.nanny --state-dir DIR --config FILE --run-start-seq N``: nanny's shell."""
import sys

from .shell import main

sys.exit(main())
