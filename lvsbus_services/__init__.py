"""lvsbus's services (pulse, nanny, lvsd, the IPVS applier, metrics), imported as ``lvsbus_services``.

The code is in ``services/``. Installed (``pip install``), this package IS ``services/`` (pyproject
maps it there), so nothing named ``services`` lands in site-packages. In a checkout run with
``PYTHONPATH=<checkout>``, this file stands in for it: it points the package at ``services/``, so
``import lvsbus_services.nanny.core`` and ``python -m lvsbus_services.nanny`` load ``services/nanny``.
"""
import os as _os

__path__ = [_os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "services")]
