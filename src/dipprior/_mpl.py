"""matplotlib, when it is really installed (plots are optional)."""

from __future__ import annotations

import types
from typing import Any


def pyplot() -> Any | None:
    """``matplotlib.pyplot`` on the Agg backend, or None when matplotlib is not installed.

    colour-science puts ``unittest.mock`` stand-ins into ``sys.modules["matplotlib"]`` when
    matplotlib is missing, so a bare ``import matplotlib`` can succeed without matplotlib;
    only a real module counts.
    """
    try:
        import matplotlib
    except ImportError:
        return None
    if not isinstance(matplotlib, types.ModuleType) or not isinstance(
            getattr(matplotlib, "__version__", None), str):
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
