"""``python -m lvsbus_services.ipvs --state-dir DIR --config FILE --run-start-seq N``: the IPVS applier's shell."""
import sys

from .shell import main

sys.exit(main())
