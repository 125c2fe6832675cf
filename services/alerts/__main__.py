"""``python -m lvsbus_services.alerts --state-dir DIR --config FILE --run-start-seq N``: the alerts shell."""
import sys

from .shell import main

sys.exit(main())
