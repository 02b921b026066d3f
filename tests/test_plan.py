"""One plan per image: what a call runs is what plan() says, for every task and every door."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from dipprior.diffusion import Scheduler
from dipprior.dip import DIPConfig
from dipprior.operators import TASKS, Denoise, Inpaint, make_task, random_pixel_mask
from dipprior.operators.registry import operator_for
from dipprior.pipeline import DIPInitializedSampler, SamplerConfig
from dipprior.pipeline.presets import method_configs_for, recommended_config

SRC = Path(__file__).resolve().parents[1] / "src" / "dipprior"
TINY_DIP = {"iterations": 3, "channels": 8, "depth": 3, "progress": False}


class Counting:
    """A model that counts its calls (the chains' NFE)."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, x, t):
        self.calls += x.shape[0]  # a batch of k chains is k evaluations
        return self.model(x, t)


def _case(task: str, size: int = 32):
    image = (0.2 + 0.6 * torch.rand(3, size, size, generator=torch.Generator().manual_seed(3)))
    params = {"box": 8} if task == "box" else {}
    op = operator_for(task, image, **params)
    return op, op.degrade(image, torch.Generator().manual_seed(4))


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("keywords", [{}, {"steps": 2}, {"init": "noise", "steps": 3}])
def test_plan_is_what_the_call_runs(model, task, keywords):
    op, y = _case(task)
    counter = Counting(model)
    sampler = DIPInitializedSampler(counter, Scheduler(), progress=False, **keywords)
    plan = sampler.plan(y, op)[0]
    r = sampler(y, op, seed=0)
    assert r.nfe == counter.calls == plan.nfe
    assert r.t0 == plan.t0 and r.dip_image is None and not plan.uses_dip
    base = (method_configs_for(op)["DDPM"] if keywords.get("init") == "noise"
            else recommended_config(op))
    assert plan.config == base.replace(**{k: v for k, v in keywords.items() if k != "init"})


def test_steps_refine_the_denoising_preset_and_fit_no_dip(model):
    """The issue's case: steps=10 on denoising was a 2000-iteration DIP start."""
    op, y = _case("denoise")
    sampler = DIPInitializedSampler(model, Scheduler(), steps=10, progress=False)
    plan = sampler.plan(y, op)[0]
    assert not plan.uses_dip and plan.config == recommended_config(op).replace(steps=10)
    r = sampler(y, op, seed=0)
    assert r.dip_image is None and r.dip_iterations is None


def test_init_dip_alone_is_the_tuned_dip_start(model):
    op, y = _case("inpaint")
    sampler = DIPInitializedSampler(model, Scheduler(), init="dip", dip=TINY_DIP,
                                    progress=False)
    plan = sampler.plan(y, op)[0]
    assert plan.config == method_configs_for(op)["DIP->DDPM"]
    assert plan.dip == DIPConfig(**{**op.dip_stage(), **TINY_DIP})  # refines the task's stage
    r = sampler(y, op, seed=0)
    assert r.dip_iterations == plan.dip_iterations == 3 and r.nfe <= plan.nfe


def test_a_setting_the_task_cannot_use_is_an_error(model):
    op, y = _case("denoise")
    with pytest.raises(ValueError, match="dip: a DIP stage was given"):
        DIPInitializedSampler(model, Scheduler(), dip=TINY_DIP).plan(y, op)


def test_a_mixed_batch_equals_single_calls_image_by_image(model):
    """Was: every image ran with the first image's settings (12 dB instead of 31)."""
    den, (hole, y_hole) = Denoise(25 / 255), _case("inpaint")
    y_den = den.degrade(_case("inpaint")[1] * 0 + 0.5, torch.Generator().manual_seed(5))
    sampler = DIPInitializedSampler(model, Scheduler(), steps=2, progress=False)
    both = sampler(torch.stack([y_den, y_hole]), [den, hole], seed=7)
    one = sampler(y_den, den, seed=7)
    two = sampler(y_hole, hole, seed=8)
    torch.testing.assert_close(both.image, torch.stack([one.image, two.image]), rtol=0, atol=0)
    assert both.nfe == [one.nfe, two.nfe] and both.t0 == [one.t0, two.t0]
    plans = sampler.plan(torch.stack([y_den, y_hole]), [den, hole])
    assert [p.config.init for p in plans] == ["observation", "classical"]


def test_a_batch_that_cannot_be_one_tensor_is_refused_before_work(model):
    sr, y = make_task("sr", factor=2), torch.rand(3, 16, 16)
    counter = Counting(model)
    with pytest.raises(ValueError, match="restore to different shapes"):
        DIPInitializedSampler(counter, Scheduler())(torch.stack([y, y]), [sr, Denoise(0.1)])
    assert counter.calls == 0


def test_compare_gives_the_number_of_a_direct_call(model):
    from dipprior.experiments import compare, standard_methods

    mask = random_pixel_mask((24, 24), 0.5, torch.Generator().manual_seed(0))
    op = Inpaint(mask)
    images = {"a": 0.2 + 0.6 * torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(1))}
    methods = standard_methods(model, Scheduler(), settings={"steps": 2}, ddpm_steps=3,
                               dip=TINY_DIP, cbm3d=False, task="inpaint")
    table = compare(images, op, methods, seed=11, progress=False)
    y = op.degrade(images["a"], torch.Generator().manual_seed(11))
    for name, init in (("DDPM", "noise"), ("DIP->DDPM", "dip"), ("Classical->DDPM", "classical")):
        extra = {"steps": 3} if init == "noise" else {"steps": 2}
        direct = DIPInitializedSampler(model, Scheduler(), init=init, progress=False,
                                       **({"dip": TINY_DIP} if init == "dip" else {}), **extra)
        r = direct(y, op, seed=11)
        row = next(r_ for r_ in table.rows if r_["Method"] == name and r_["Image"] == "a")
        from dipprior.metrics import psnr

        assert row["PSNR"] == pytest.approx(psnr(r.image.clamp(0, 1), images["a"]), abs=1e-9)


def test_an_explicit_config_runs_as_given(model):
    op, y = _case("denoise")
    config = SamplerConfig(init="observation", steps=2, lam=40.0)
    plan = DIPInitializedSampler(model, Scheduler(), config).plan(y, op)[0]
    assert plan.config == config


def test_no_isinstance_on_a_task_outside_the_operators():
    """The contract: code above operators/ asks the operator, never its class."""
    names = {"Denoise", "Inpaint", "SuperResolution", "Blur", "Demosaic"}
    found = []
    for path in SRC.rglob("*.py"):
        if path.relative_to(SRC).parts[0] == "operators":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
                classes = node.args[1]
                elts = classes.elts if isinstance(classes, ast.Tuple) else [classes]
                found += [f"{path.name}:{node.lineno}" for e in elts
                          if getattr(e, "id", getattr(e, "attr", "")) in names]
    assert found == []


def test_demosaicing_took_at_most_three_source_files():
    files = [p.relative_to(SRC) for p in SRC.rglob("*.py") if "demosaic" in p.read_text().lower()]
    assert len(files) <= 3, files


@pytest.mark.parametrize("task", sorted(TASKS))
def test_restore_forecasts_the_plan(model, task):
    """restore's forecast counts the NFE the sampler's plan says (its refusal names them)."""
    from dipprior.cli import build_parser
    from dipprior.cli.restore_setup import make_sampler, plan_cost, sampler_settings

    op, y = _case(task)
    args = build_parser().parse_args(["restore", "in.png", "--task", task, "--out", "o.png",
                                      "--steps", "3", "--time-limit", "1e-9"])
    sampler = make_sampler(args, sampler_settings(args), model, Scheduler())
    with pytest.raises(ValueError, match=rf"\({sampler.plan(y, op)[0].nfe} NFE"):
        plan_cost(args, y, op, sampler, None)
