"""matplotlib, when it is really installed (plots are optional), without touching its backend.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` and saved through its own canvas:
pyplot is never imported and ``matplotlib.use`` never called, so a notebook user's backend stays
what it was.
"""

from __future__ import annotations

import types
from typing import Any

PLOT_HINT = "pip install dipprior[plot]"


def figure(**kwargs: Any) -> Any | None:
    """A new ``matplotlib.figure.Figure(**kwargs)``, or None when matplotlib is not installed.

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
    from matplotlib.figure import Figure

    return Figure(**kwargs)
