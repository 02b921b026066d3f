"""The task registry: names, parameters, factories, and the errors a user sees."""

from __future__ import annotations

import pytest
import torch

from dipprior.experiments import classical_label
from dipprior.operators import TASKS, Inpaint, make_task
from dipprior.operators.registry import Task, get_task, noise_level, operator_for, register


def test_every_builtin_task_is_registered_with_its_parameters():
    assert set(TASKS) == {"denoise", "inpaint", "box", "sr", "deblur", "demosaic"}
    assert [p.name for p in get_task("deblur").params] == ["blur", "kernel", "blur_sigma"]
    assert get_task("deblur").params[2].flag == "--sigma"  # one option for every noise level
    assert get_task("inpaint").describe({"keep": 0.25}) == "75% missing"
    assert get_task("box").describe({"box": 8}, long=True) == "inpainting, a centred 8x8 hole"


def test_a_name_is_registered_once_and_an_unknown_one_is_named():
    with pytest.raises(ValueError, match="'sr' is registered already"):
        register(Task("sr", "another", lambda **p: None))
    with pytest.raises(ValueError, match=r"task: expected one of \['box', .*got 'dehaze'"):
        get_task("dehaze")
    with pytest.raises(TypeError, match="unknown parameters \\['strength'\\]"):
        make_task("denoise", strength=3)


def test_noise_levels_are_checked_in_the_users_units():
    assert noise_level(25.5, "sigma") == pytest.approx(0.1)
    for bad in (-1, 256, float("nan"), True, "x"):
        with pytest.raises(ValueError, match="sigma: expected a noise std in 0..255"):
            noise_level(bad, "sigma")


def test_operator_for_draws_a_factory_from_the_seed():
    image = torch.rand(3, 16, 16)
    a, b = (operator_for("inpaint", image, seed=3) for _ in range(2))
    c = operator_for("inpaint", image, seed=4)
    assert isinstance(a, Inpaint) and torch.equal(a.mask, b.mask) and not torch.equal(a.mask,
                                                                                      c.mask)
    assert operator_for("sr", image, factor=2) is not None  # an operator is returned as it is
    with pytest.raises(ValueError, match="mask: a mask image"):
        operator_for("inpaint", image, real=True)  # a real observation needs its mask


def test_the_classical_peer_is_named_by_the_operator():
    assert [classical_label(t) for t in ("inpaint", "box", "sr", "deblur", "demosaic")] == [
        "Biharmonic", "Biharmonic", "Bicubic", "Wiener", "Menon 2007"]
    assert classical_label(None) == classical_label("unknown") == "Classical"
