"""lvsbus's tools (replay, timeline, simulator), imported as ``lvsbus_tools``.

The code is in ``tools/``. Installed (``pip install``), this package IS ``tools/`` (pyproject maps it
there), so nothing named ``tools`` lands in site-packages. In a checkout run with
``PYTHONPATH=<checkout>``, this file stands in for it: it points the package at ``tools/``.
"""
import os as _os

__path__ = [_os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "tools")]
