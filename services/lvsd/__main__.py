"""``python -m lvsbus_services.lvsd --state-dir DIR --config FILE --run-start-seq N``: lvsd's shell."""
import sys

from .shell import main

sys.exit(main())
