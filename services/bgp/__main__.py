"""``python -m lvsbus_services.bgp --state-dir DIR --config FILE --run-start-seq N``: the bgp shell."""
import sys

from .shell import main

sys.exit(main())
