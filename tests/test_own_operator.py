"""docs/own_operator.md's operator, from examples/own_operator.py: a user's own linear operator
through the sampler, a DIP start, its own classical restoration, the registry, ``compare`` and
the command line's code."""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_unet
from dipprior import DIPInitializedSampler
from dipprior.cli import main as cli
from dipprior.diffusion import Scheduler, save
from dipprior.experiments import compare, standard_methods
from dipprior.io import sample_image, save_image
from dipprior.operators import TASKS, make_task

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "own_operator.py"
PAGE = ROOT / "docs" / "own_operator.md"


@pytest.fixture
def example(monkeypatch):
    """The example module, imported (which registers its task; unregistered afterwards)."""
    tasks = dict(TASKS)
    spec = importlib.util.spec_from_file_location("own_operator", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "own_operator", module)  # for inspect.getsource
    spec.loader.exec_module(module)
    yield module
    TASKS.clear()
    TASKS.update(tasks)


@pytest.fixture
def prior(tmp_path):
    """A tiny prior saved as a checkpoint folder (what ``--model`` reads)."""
    folder = tmp_path / "prior"
    save(tiny_unet(perturb=0.05), Scheduler(), folder)
    return str(folder)


def test_the_page_shows_the_example_s_code(example):
    page = PAGE.read_text()
    for obj in (example.Greyscale, example.Colourisation, example._make_colourise):
        assert inspect.getsource(obj) in page, obj.__name__
    assert 'register(Task("colourise"' in page


def test_adjoint_and_classical(example):
    g = torch.Generator().manual_seed(0)
    x, v = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    for op in (example.Greyscale(), example.Colourisation()):
        assert torch.allclose((op(x) * v).sum(), (x * op.adjoint(v)).sum(), atol=1e-5)
    op = example.Colourisation()
    y = op(x[0])
    assert torch.allclose(op(op.classical(y)), y, atol=1e-6)  # the grey image fits y exactly
    bare = example.Greyscale()
    assert torch.allclose(bare(bare.classical(y)), y, atol=1e-4)  # the pseudo-inverse does too
    assert bare.classical_name == "Pseudo-inverse" and bare.crop(0, 0, 4, 4) is None
    assert op.crop(2, 3, 4, 4) is op


def test_sampler_plans_and_runs_it(example, model):
    clean = sample_image("astronaut", size=16)
    scheduler = Scheduler()
    sampler = DIPInitializedSampler(model, scheduler, steps=2, progress=False)
    bare, own = example.Greyscale(), example.Colourisation()
    plan = sampler.plan(bare(clean), bare)[0]
    assert (plan.init, plan.t0, plan.nfe, plan.uses_dip) == ("classical", 100, 8, False)
    plan = sampler.plan(own(clean), own)[0]
    assert (plan.init, plan.t0) == ("classical", 500)
    result = sampler(own(clean), own, seed=0)
    assert result.image.shape == (3, 16, 16) and result.t0 == 500 and result.nfe == 8
    dip_start = DIPInitializedSampler(model, scheduler, init="dip", steps=2,
                                      dip={"iterations": 3, "channels": 8}, progress=False)
    result = dip_start(bare(clean), bare, seed=0)
    assert result.dip_image is not None and result.image.shape == (3, 16, 16)


def test_registered_task_serves_make_task_and_compare(example, model):
    op = make_task("colourise", luma_sigma=10)
    assert isinstance(op, example.Colourisation) and op.noise_sigma == pytest.approx(10 / 255)
    images = {"a": sample_image("astronaut", size=16)}
    methods = standard_methods(model, Scheduler(), settings={"steps": 2}, ddpm_steps=2,
                               dip={"iterations": 2, "channels": 8}, task="colourise")
    table = compare(images, make_task("colourise"), methods, seed=0, progress=False)
    rows = {row["Method"] for row in table.rows}
    assert {"Grey", "DIP", "DDPM", "DIP->DDPM", "Classical->DDPM"} <= rows


def test_cli_code_takes_the_task(example, prior, tmp_path):
    grey = tmp_path / "grey.png"
    save_image(make_task("colourise").degrade(sample_image("coffee", size=16)), grey)
    out = tmp_path / "colour.png"
    assert cli(["restore", str(grey), "--task", "colourise", "--model", prior, "--steps", "2",
                "--no-progress", "--out", str(out)]) == 0
    assert out.exists()


def test_the_example_runs(example, prior, capsys):
    example.main(["--model", prior, "--size", "16", "--steps", "2", "--dip-iterations", "2",
                  "--no-progress"])
    printed = capsys.readouterr().out
    assert "Colourisation, default (grey start, t0 500)" in printed and "| Grey" in printed


@pytest.mark.slow
def test_the_shell_route_of_the_page():
    """``python -c "import own_operator ..." restore --help`` in examples/ lists the task; the
    ``dipprior`` command alone does not."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    route = ("import own_operator, sys; from dipprior.cli import main; sys.exit(main())")
    shown = subprocess.run([sys.executable, "-c", route, "restore", "--help"],
                           cwd=ROOT / "examples", env=env, capture_output=True, text=True)
    assert shown.returncode == 0 and "colourise" in shown.stdout
    plain = subprocess.run([sys.executable, "-c", "import sys; from dipprior.cli import main; "
                            "sys.exit(main())", "restore", "--help"],
                           cwd=ROOT / "examples", env=env, capture_output=True, text=True)
    assert plain.returncode == 0 and "colourise" not in plain.stdout
