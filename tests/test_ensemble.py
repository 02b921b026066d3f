"""The geometric self-ensemble (diffusion.ensemble) and its place in the sampler's settings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dipprior.diffusion import Scheduler
from dipprior.diffusion.ensemble import SelfEnsemble, symmetries
from dipprior.operators import Denoise
from dipprior.pipeline import DIPInitializedSampler, SamplerConfig


class Lopsided(nn.Module):
    """A model that is equivariant to no flip or turn (a random kernel, a position ramp)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        ramp = torch.linspace(0, 1, x.shape[-1], dtype=x.dtype).expand_as(x)
        return self.conv(x) * ramp + t.view(-1, 1, 1, 1).to(x.dtype) * 1e-3


def by_hand(model, x, t, size):
    """The mean of g^-1 model(g x) written out with numpy-style flips, one call per g."""
    outs = []
    for turns, mirrored in symmetries(size):
        v = torch.flip(x, (-1,)) if mirrored else x
        v = torch.rot90(v, turns, (2, 3))
        o = torch.rot90(model(v, t), 4 - turns, (2, 3))
        outs.append(torch.flip(o, (-1,)) if mirrored else o)
    return torch.stack(outs).mean(0)


@pytest.mark.parametrize("size", [1, 2, 4, 8])
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 3, 6, 10)])
def test_the_ensemble_is_the_mean_over_its_symmetries(size, shape):
    model = Lopsided()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([7] * shape[0])
    with torch.no_grad():
        torch.testing.assert_close(SelfEnsemble(model, size)(x, t), by_hand(model, x, t, size))
    assert len(set(symmetries(size))) == size


def test_eight_symmetries_make_any_model_equivariant_in_one_batch_per_shape():
    model = Lopsided()
    ensemble = SelfEnsemble(model, 8)
    x, t = torch.randn(1, 3, 6, 10), torch.tensor([3])
    with torch.no_grad():
        out = ensemble(x, t)
        model.calls.clear()
        turned = ensemble(torch.rot90(x, 1, (2, 3)), t)
        mirrored = ensemble(x.flip(-1), t)
    torch.testing.assert_close(turned, torch.rot90(out, 1, (2, 3)))
    torch.testing.assert_close(mirrored, out.flip(-1))
    assert model.calls[:2] == [(4, 3, 10, 6), (4, 3, 6, 10)]  # two shapes, two batches
    model.calls.clear()
    with torch.no_grad():
        ensemble(torch.randn(2, 3, 8, 8), torch.tensor([3, 3]))
    assert model.calls == [(16, 3, 8, 8)]  # a square: one batch of all eight


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="ensemble"):
        SelfEnsemble(Lopsided(), 3)
    for bad in (0, 3, 16, True, "8", 8.0):
        with pytest.raises(ValueError, match="ensemble"):
            SamplerConfig(ensemble=bad)


def test_the_sampler_ensembles_each_step_and_counts_its_evaluations():
    model, scheduler = Lopsided(), Scheduler()
    op = Denoise(0.1)
    y = op.degrade(torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(2)),
                   torch.Generator().manual_seed(3))
    config = SamplerConfig(init="observation", steps=1, lam=320.0)
    plain = DIPInitializedSampler(model, scheduler, config, progress=False)
    ens = DIPInitializedSampler(model, scheduler, config.replace(ensemble=8), progress=False)
    a, b = plain(y, op), ens(y, op)
    assert (a.nfe, b.nfe) == (1, 8) and ens.plan(y, op)[0].nfe == 8
    assert not torch.equal(a.image, b.image)
    # the one step with the ensembled model by hand: the same image
    by_hand_sampler = DIPInitializedSampler(SelfEnsemble(model, 8), scheduler, config,
                                            progress=False)
    torch.testing.assert_close(b.image, by_hand_sampler(y, op).image, rtol=0, atol=1e-6)


def test_restore_ensemble_option(tmp_path, capsys, make_unet):
    from dipprior.cli import main
    from dipprior.diffusion import save
    from dipprior.io import sample_image, save_image

    model = str(save(make_unet(), Scheduler(), tmp_path / "m"))
    save_image(sample_image("chelsea", 16), tmp_path / "c.png")
    base = ["restore", str(tmp_path / "c.png"), "--task", "denoise", "--sigma", "25",
            "--simulate", "--model", model, "--no-progress"]
    assert main([*base, "--ensemble", "8", "--out", str(tmp_path / "o.png")]) == 0
    assert "NFE=8" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*base, "--ensemble", "3", "--out", str(tmp_path / "p.png")])
    assert "--ensemble" in capsys.readouterr().err and not (tmp_path / "p.png").exists()


def test_an_ensemble_that_cannot_fit_is_refused_before_any_call(monkeypatch):
    from dipprior.pipeline import checks

    model = Lopsided()
    monkeypatch.setattr(checks, "device_memory", lambda device: 2.0**20 * 5)  # 5 MiB
    op = Denoise(0.1)
    config = SamplerConfig(init="observation", steps=1, lam=320.0)
    DIPInitializedSampler(model, Scheduler(), config, progress=False)(torch.rand(3, 32, 32), op)
    model.calls.clear()
    with pytest.raises(ValueError, match=r"evaluated in 8 views \(ensemble\).* smaller ensemble"):
        DIPInitializedSampler(model, Scheduler(), config.replace(ensemble=8),
                              progress=False)(torch.rand(3, 32, 32), op)
    assert not model.calls


@pytest.mark.parametrize("training", [False, True])
def test_the_callers_model_keeps_its_mode(training):
    """The wrapper's own mode once switched the wrapped prior to train mode (dropout on)."""
    model = Lopsided().train(training)
    op = Denoise(0.1)
    config = SamplerConfig(init="observation", steps=1, lam=320.0, ensemble=8)
    DIPInitializedSampler(model, Scheduler(), config, progress=False)(torch.rand(3, 8, 8), op)
    assert model.training == training


def test_a_bfloat16_prior_is_averaged_in_float32():
    model = Lopsided().to(torch.bfloat16)
    x, t = torch.randn(1, 3, 8, 8).to(torch.bfloat16), torch.tensor([3])
    with torch.no_grad():
        out = SelfEnsemble(model, 8)(x, t)
        reference = by_hand(lambda v, s: model(v, s).float(), x, t, 8)
    assert out.dtype == torch.bfloat16  # the model's dtype back, the sum taken in float32
    torch.testing.assert_close(out.float(), reference, rtol=1e-2, atol=1e-2)


def test_an_output_object_or_tuple_is_unwrapped_as_the_sampler_does():
    from types import SimpleNamespace

    from dipprior.diffusion.sampling import as_tensor

    model = Lopsided()
    x, t = torch.randn(1, 3, 6, 6), torch.tensor([2])
    with torch.no_grad():
        plain = SelfEnsemble(model, 8)(x, t)
        wrapped = SelfEnsemble(lambda v, s: SimpleNamespace(sample=model(v, s)), 8)(x, t)
        tupled = SelfEnsemble(lambda v, s: (model(v, s),), 8)(x, t)
    torch.testing.assert_close(wrapped, plain, rtol=0, atol=0)
    torch.testing.assert_close(tupled, plain, rtol=0, atol=0)
    assert as_tensor("other") == "other"  # left as it is, for model_output to refuse
