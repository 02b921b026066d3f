"""Plotting never changes the user's matplotlib backend (no pyplot, no ``matplotlib.use``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_plotting_leaves_the_backend_alone(tmp_path):
    # a fresh interpreter: the backend a user chose ("svg" here, through MPLBACKEND, as a
    # notebook's inline backend would be) must survive importing dipprior and drawing each plot
    script = textwrap.dedent(f"""
        import sys
        import matplotlib
        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        import torch
        import dipprior, dipprior.experiments as ex
        from dipprior.experiments.plots import save_figure
        from dipprior._prior_export import plot_loss_curve
        out = {str(tmp_path)!r}
        ex.plot_quality_vs_nfe([{{"Method": "A", "NFE": 1, "PSNR": 20.0, "Seconds": 1.0}}],
                               out + "/a.png")
        ex.plot_psnr_vs_seconds({{"A": [(1.0, 20.0)]}}, out + "/b.png")
        save_figure({{"x": {{"c": torch.zeros(3, 4, 4)}}}}, None, out + "/c.png")
        plot_loss_curve([(1, 1.0), (2, 0.5)], out + "/d.png")
        print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
    """)
    env = {**os.environ, "MPLBACKEND": "svg", "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["svg", "False"]
    for name in "abcd":
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
