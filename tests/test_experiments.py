"""experiments: compare / quality_vs_nfe / t0_ablation tables, sharding, caching, plots, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from dipprior import experiments as ex
from dipprior import pipeline
from dipprior._distributed import gather, shard
from dipprior.cli import main
from dipprior.diffusion import Scheduler, save
from dipprior.dip import DIPConfig
from dipprior.experiments import runner
from dipprior.io import save_image
from dipprior.metrics import psnr
from dipprior.operators import (
    Denoise,
    make_task,  # noqa: E402
)
from dipprior.pipeline import SamplerConfig, SampleResult

DIP = DIPConfig(channels=8, depth=3, iterations=8, progress=False)


def _images(n: int = 2, size: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for i in range(n):
        coarse = torch.rand(1, 3, 4, 4, generator=g)
        img = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")[0]
        out[f"img{i}"] = (0.1 + 0.8 * img).clamp(0, 1)
    return out


def identity(y, op, seed):
    return y


class Constant:
    def __init__(self, value):
        self.value = value

    def __call__(self, y, op, seed):
        return SampleResult(image=torch.full_like(y, self.value), nfe=7)


# ----------------------------------------------------------------------------- compare


def test_compare_rows_columns_and_averages():
    images = _images(3)
    op = Denoise(0.1)
    table = ex.compare(images, op, {"Noisy": identity, "Gray": Constant(0.5)}, seed=4,
                       progress=False)
    assert table.columns == ["Image", "Method", "PSNR", "SSIM", "MSE", "MAE", "Delta E", "NFE",
                             "Seconds"]
    names = [(r["Image"], r["Method"]) for r in table.rows]
    assert names == [("img0", "Noisy"), ("img0", "Gray"), ("img1", "Noisy"), ("img1", "Gray"),
                     ("img2", "Noisy"), ("img2", "Gray"), ("Average", "Noisy"),
                     ("Average", "Gray")]
    # image i is degraded with seed + i: recompute the noisy PSNR independently
    for i, (_name, clean) in enumerate(images.items()):
        y = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(4 + i))
        row = table.rows[2 * i]
        assert row["PSNR"] == pytest.approx(psnr(y, clean), abs=1e-9)
        assert table.rows[2 * i + 1]["NFE"] == 7 and row["NFE"] == 0
    avg = table.rows[-2]
    assert avg["PSNR"] == pytest.approx(np.mean([table.rows[k]["PSNR"] for k in (0, 2, 4)]))
    md = table.to_markdown()
    assert "| Average | Gray" in md
    assert table.to_csv().splitlines()[0].startswith("Image,Method,PSNR")


def test_compare_operator_factory_and_cbm3d_only_for_denoising():
    masks = []

    def factory(image, generator):
        op = make_task("inpaint", keep=0.5)(image, generator)
        masks.append(op.mask)
        return op

    methods = {"Observed": identity, "CBM3D": pipeline.CBM3DBaseline.__new__(
        pipeline.CBM3DBaseline)}
    table = ex.compare(_images(2), factory, methods, progress=False)
    assert {r["Method"] for r in table.rows} == {"Observed"}  # CBM3D does not inpaint
    assert len(masks) == 2 and not torch.equal(masks[0], masks[1])
    assert all(float(m.mean()) == 0.5 for m in masks)


def test_compare_standard_methods_share_one_dip_fit(model, monkeypatch):
    calls = []
    real = pipeline.fit_dip

    def counting(*args, **kwargs):
        calls.append(kwargs.get("seed"))
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "fit_dip", counting)
    methods = ex.standard_methods(model, Scheduler(), sampler=SamplerConfig(steps=3, t0=50),
                                  ddpm_steps=4, dip=DIP, cbm3d=False)
    table = ex.compare(_images(2), Denoise(0.1), methods, seed=0, progress=False)
    assert calls == [0, 1]  # one fit per image, shared by DIP and DIP->DDPM
    rows = {(r["Image"], r["Method"]): r for r in table.rows}
    assert rows[("img0", "DDPM")]["NFE"] == 4 and rows[("img0", "DDPM")]["t0"] == 999
    assert rows[("img0", "DIP->DDPM")]["NFE"] == 3 and rows[("img0", "DIP->DDPM")]["t0"] == 50
    assert rows[("img0", "DIP")]["NFE"] == 0 and rows[("img0", "DIP")]["t0"] is None
    assert rows[("img1", "Observation->DDPM")]["NFE"] == 3
    # the shared fit is the fit a lone DIP run makes
    y = Denoise(0.1).degrade(_images(2)["img1"], torch.Generator().manual_seed(1))
    alone = pipeline.DIPBaseline(DIP, progress=False)(y, Denoise(0.1), seed=1).image
    assert rows[("img1", "DIP")]["PSNR"] == pytest.approx(psnr(alone, _images(2)["img1"]))
    assert rows[("img1", "DIP->DDPM")]["Seconds"] > 0


def test_the_classical_peer_and_start_run_through_the_runner(model):
    """compare() with standard_methods(task="inpaint"): the biharmonic row is scikit-image's
    inpainting scored against the clean image, and Classical->DDPM starts from it."""
    from skimage.restoration import inpaint_biharmonic

    from dipprior.operators import Inpaint

    methods = ex.standard_methods(model, Scheduler(), sampler=SamplerConfig(steps=3, t0=50),
                                  ddpm_steps=4, dip=DIP, cbm3d=False, task="inpaint")
    assert "Biharmonic" in methods and "Classical->DDPM" in methods
    factory = make_task("inpaint")
    table = ex.compare(_images(1), factory, methods, seed=0, progress=False)
    rows = {r["Method"]: r for r in table.rows if r["Image"] == "img0"}
    assert rows["Biharmonic"]["NFE"] == 0 and rows["Classical->DDPM"]["NFE"] == 3
    assert rows["Classical->DDPM"]["t0"] == 50
    clean = _images(1)["img0"]
    op, y = ex.degrade(clean, factory, 0)
    assert isinstance(op, Inpaint)
    expected = inpaint_biharmonic(y.permute(1, 2, 0).double().numpy(), op.mask[0].numpy() == 0,
                                  channel_axis=-1)
    expected = torch.from_numpy(expected).permute(2, 0, 1).float().clamp(0, 1)
    assert rows["Biharmonic"]["PSNR"] == pytest.approx(psnr(expected, clean), abs=1e-4)
    # denoising has CBM3D as its peer, never the classical one
    assert "Biharmonic" not in {r["Method"] for r in ex.compare(
        _images(1), Denoise(0.1), methods, seed=0, progress=False).rows}


def test_dip_cache_roundtrip(tmp_path, monkeypatch):
    y = Denoise(0.1).degrade(_images(1)["img0"], torch.Generator().manual_seed(0))
    first, s1 = ex.fit_dip_cached(y, Denoise(0.1), DIP, 3, ex.DIPCache(tmp_path), None, False)

    def miss(*args, **kwargs):
        raise RuntimeError("cache miss")

    monkeypatch.setattr(runner, "fit_dip", miss)
    again, s2 = ex.fit_dip_cached(y, Denoise(0.1), DIP.replace(progress=True), 3,
                                   ex.DIPCache(tmp_path), None, False)
    assert torch.equal(first, again) and s1 == s2
    with pytest.raises(RuntimeError, match="cache miss"):  # another seed is another fit
        ex.fit_dip_cached(y, Denoise(0.1), DIP, 4, ex.DIPCache(tmp_path), None, False)


def test_compare_bad_input():
    with pytest.raises(ValueError, match="methods"):
        ex.compare(_images(1), Denoise(0.1), {}, progress=False)
    with pytest.raises(TypeError, match="methods"):
        ex.compare(_images(1), Denoise(0.1), {"x": 3}, progress=False)
    with pytest.raises(ValueError, match="images"):
        ex.compare({"a": torch.rand(1, 8, 8)}, Denoise(0.1), {"x": identity}, progress=False)
    with pytest.raises(TypeError, match="operator"):
        ex.compare(_images(1), "denoise", {"x": identity}, progress=False)
    with pytest.raises(ValueError, match="task"):
        make_task("dehaze")


# ----------------------------------------------------------------------------- sharding


def test_shard_covers_every_item_once():
    items = list(range(11))
    parts = [shard(items, r, 3) for r in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert sorted(sum(parts, [])) == items
    with pytest.raises(ValueError, match="rank"):
        shard(items, 3, 3)
    assert gather([1, 2]) == [1, 2]  # not distributed: identity


@pytest.mark.slow
def test_torchrun_two_ranks_gather_the_same_table(tmp_path):
    """Two gloo processes each take half of the images; every rank gets the full table."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent("""
        import json, sys, torch
        from dipprior import experiments as ex
        from dipprior.operators import Denoise
        rank, world = ex.init_distributed()
        images = {f"im{i}": torch.full((3, 16, 16), 0.1 * (i + 1)) for i in range(5)}
        seen = []
        def method(y, op, seed):
            seen.append(seed)
            return y
        table = ex.compare(images, Denoise(0.1), {"Noisy": method}, seed=10, progress=False)
        out = {"rank": rank, "world": world, "seen": seen,
               "rows": [[r["Image"], r["PSNR"]] for r in table.rows]}
        open(sys.argv[1] + f".{rank}", "w").write(json.dumps(out))
        torch.distributed.destroy_process_group()
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", "2", str(script), str(tmp_path / "out")],
                   check=True, env=env, capture_output=True, timeout=120)
    import json

    outs = [json.loads((tmp_path / f"out.{r}").read_text()) for r in range(2)]
    assert [o["seen"] for o in outs] == [[10, 12, 14], [11, 13]]
    assert outs[0]["rows"] == outs[1]["rows"]
    single = ex.compare({f"im{i}": torch.full((3, 16, 16), 0.1 * (i + 1)) for i in range(5)},
                        Denoise(0.1), {"Noisy": identity}, seed=10, progress=False)
    assert outs[0]["rows"] == [[r["Image"], pytest.approx(r["PSNR"])] for r in single.rows]


# ----------------------------------------------------------------------------- curves, t0


def test_quality_vs_nfe_rows(model):
    rows = ex.quality_vs_nfe(_images(2), Denoise(0.1), model, Scheduler(), steps=(1, 3, 30),
                             sampler=SamplerConfig(t0=20), dip=DIP, progress=False)
    got = [(r["Method"], r["Steps"], r["NFE"]) for r in rows]
    # DIP alone first; a warm start from t0=20 takes at most t0 + 1 = 21 steps
    assert got == [("DIP", 0, 0), ("DIP->DDPM", 1, 1), ("DIP->DDPM", 3, 3),
                   ("DIP->DDPM", 30, 21), ("DDPM", 1, 1), ("DDPM", 3, 3), ("DDPM", 30, 30),
                   ("Observation->DDPM", 1, 1), ("Observation->DDPM", 3, 3),
                   ("Observation->DDPM", 30, 21)]
    for r in rows:
        assert r["Images"] == 2 and r["Seconds"] > 0 and 0 < r["PSNR"] < 100
    # the DIP fit is counted in the warm start's seconds
    assert rows[1]["Seconds"] >= rows[0]["Seconds"] > rows[4]["Seconds"]


def test_quality_vs_nfe_auto_clamps_and_dedupes(model):
    rows = ex.quality_vs_nfe(_images(1), Denoise(25 / 255), model, Scheduler(),
                             steps=(200, 300), inits=("observation",), progress=False)
    t0 = Scheduler().timestep_for_noise_level(2 * 25 / 255)
    assert [(r["Steps"], r["NFE"]) for r in rows] == [(200, t0 + 1)]
    with pytest.raises(ValueError, match="inits"):
        ex.quality_vs_nfe(_images(1), Denoise(0.1), model, Scheduler(), inits=("pinv",))


def test_plot_quality_vs_nfe_writes_png(tmp_path):
    rows = [{"Method": "DIP", "NFE": 0, "PSNR": 21.0, "Seconds": 3.0},
            {"Method": "A", "NFE": 1, "PSNR": 20.0, "Seconds": 0.5},
            {"Method": "A", "NFE": 10, "PSNR": 25.0, "Seconds": 2.0},
            {"Method": "B", "NFE": 5, "PSNR": 22.0, "Seconds": 1.0}]
    path = tmp_path / "curve.png"
    ex.plot_quality_vs_nfe(rows, path, title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]  # no temp file left


def test_plot_psnr_vs_seconds_writes_png_and_skips_without_matplotlib(tmp_path, monkeypatch):
    from dipprior import _mpl

    points = {"A": [(0.5, 20.0), (2.0, 25.0)], "B": [(float("nan"), 22.0), (0.0, 21.0)]}
    path = ex.plot_psnr_vs_seconds(points, tmp_path / "p.png", title="t")
    assert path == tmp_path / "p.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]  # no temp file left
    monkeypatch.setattr(_mpl, "figure", lambda **kwargs: None)
    assert ex.plot_psnr_vs_seconds(points, tmp_path / "q.png") is None
    assert not (tmp_path / "q.png").exists()


def test_t0_ablation_table_and_summary(model):
    scheduler = Scheduler()
    table = ex.t0_ablation(_images(2), Denoise(25 / 255), model, scheduler,
                           t0s=(2, 40, 0.2, "auto"), sampler=SamplerConfig(steps=3), dip=DIP,
                           progress=False)
    methods = [r["Method"] for r in table.rows if r["Image"] == "img0"]
    assert methods == ["DIP", "t0=2", "t0=40", "t0=0.2", "auto"]
    rows = {(r["Image"], r["Method"]): r for r in table.rows}
    assert rows[("img0", "t0=2")]["NFE"] == 3 and rows[("img0", "t0=2")]["t0"] == 2
    assert rows[("img0", "t0=0.2")]["t0"] == round(0.2 * 999)
    auto = rows[("img1", "auto")]
    assert auto["t0"] == scheduler.timestep_for_noise_level(2 * auto["Error std"])
    summary = ex.best_fixed_t0(table)
    fixed = {m: rows[("Average", m)]["PSNR"] for m in ("t0=2", "t0=40", "t0=0.2")}
    assert summary["best_fixed"] == max(fixed, key=fixed.get)
    oracle = np.mean([max(rows[(im, m)]["PSNR"] for m in fixed) for im in ("img0", "img1")])
    assert summary["oracle_psnr"] == pytest.approx(oracle)
    assert summary["auto_minus_best_fixed"] == pytest.approx(
        rows[("Average", "auto")]["PSNR"] - fixed[summary["best_fixed"]])


def test_load_folder_sorted_first_n_center_crop(tmp_path):
    for name, value in (("b", 0.2), ("a", 0.4), ("c", 0.6)):
        img = torch.full((3, 20, 24), value)
        img[:, 10, 12] = 1.0
        save_image(img, tmp_path / f"{name}.png")
    images = ex.load_folder(tmp_path, n_images=2, size=8)
    assert list(images) == ["a", "b"]
    assert images["a"].shape == (3, 8, 8)
    assert float(images["a"][0, 4, 4]) == 1.0  # the centre pixel stays in the centre


def test_load_folder_held_out_takes_every_27th_from_the_14th(tmp_path):
    for i in range(60):
        save_image(torch.full((3, 4, 4), i / 60), tmp_path / f"p{i:02d}.png")
    assert list(ex.load_folder(tmp_path, held_out=True)) == ["p13", "p40"]
    assert list(ex.load_folder(tmp_path, n_images=1, held_out=True)) == ["p13"]


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def prior_dir(tmp_path_factory, model):
    directory = tmp_path_factory.mktemp("prior")
    save(model, Scheduler(), directory)
    return directory


def test_cli_restore_inpaint(tmp_path, prior_dir):
    clean = _images(1)["img0"]
    save_image(clean, tmp_path / "in.png")
    out = tmp_path / "out.png"
    code = main(["restore", str(tmp_path / "in.png"), "--task", "inpaint", "--simulate",
                 "--keep", "0.5",
                 "--model", str(prior_dir), "--steps", "2", "--t0", "30",
                 "--seed", "1", "--out",
                 str(out), "--no-progress"])
    assert code == 0 and out.is_file()
    from dipprior.io import load_image

    assert load_image(out).shape == clean.shape


def test_cli_restore_early_stopping_choice(tmp_path, prior_dir):
    save_image(_images(1)["img0"], tmp_path / "in.png")
    out = tmp_path / "out.png"
    args = ["restore", str(tmp_path / "in.png"), "--task", "denoise", "--simulate", "--model",
            str(prior_dir), "--init", "dip", "--steps", "2", "--t0", "20", "--dip-iterations", "5",
            "--dip-channels", "8", "--out", str(out), "--no-progress"]
    with pytest.raises(SystemExit):  # argparse rejects an unknown rule
        main(args + ["--early-stopping", "sometimes"])
    assert not out.exists()
    assert main(args + ["--early-stopping", "discrepancy"]) == 0 and out.is_file()


def _restore_settings(*options):
    """What restore runs on a 64x64 image with these options: (settings, DIP stage), the
    settings None when no option changes the task's preset."""
    from dipprior.cli import build_parser
    from dipprior.cli.restore_setup import (
        degrade_like,
        make_sampler,
        real_operator,
        sampler_settings,
        task_from,
    )
    from dipprior.diffusion import Scheduler, UNet

    args = build_parser().parse_args(["restore", "in.png", "--out", "o.png", *options])
    choice, settings = task_from(args), sampler_settings(args)
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    op = (degrade_like(image, choice, 0) if args.simulate else real_operator(choice, image))[0]
    sampler = make_sampler(args, settings, UNet(base_channels=8), Scheduler())
    plan = sampler.plan(op.forward(image), op)[0]
    return (plan.config if settings else None), plan.dip


def test_cli_restore_options_change_the_task_preset():
    from dipprior.dip import DIPConfig
    from dipprior.pipeline.presets import method_configs

    assert _restore_settings("--task", "denoise") == (None, None)  # the sampler's own preset
    denoise, inpaint = method_configs("denoise"), method_configs("inpaint")
    config, dip = _restore_settings("--task", "denoise", "--steps", "3")
    assert config == denoise["Observation->DDPM"].replace(steps=3) and dip is None
    config, _ = _restore_settings("--task", "denoise", "--init", "dip")
    assert config == denoise["DIP->DDPM"]
    config, _ = _restore_settings("--task", "inpaint", "--simulate", "--init", "noise", "--lam",
                                  "10")
    assert config == inpaint["DDPM"].replace(lam=10.0)
    config, _ = _restore_settings("--task", "box", "--simulate", "--eta", "0.5")
    # the recommended preset (the classical start, mean of 4) with eta instead of zeta
    assert config == inpaint["Classical->DDPM"].replace(zeta=None, eta=0.5, samples=4)
    config, _ = _restore_settings("--task", "box", "--simulate", "--samples", "2")
    assert config == inpaint["Classical->DDPM"].replace(samples=2)
    config, _ = _restore_settings("--task", "denoise", "--no-guidance")
    assert config == denoise["Observation->DDPM"].replace(guidance=None)
    _, dip = _restore_settings("--task", "denoise", "--init", "dip", "--dip-iterations", "500")
    assert (dip.iterations, dip.early_stopping) == (500, "reference")  # default stage kept
    with pytest.raises(ValueError, match="--dip-iterations: the settings of --task denoise"):
        _restore_settings("--task", "denoise", "--dip-iterations", "500")  # no DIP to refine
    _, dip = _restore_settings("--task", "sr", "--init", "dip", "--dip-channels", "16")
    assert (dip.iterations, dip.channels, dip.early_stopping) == (1000, 16, None)
    assert isinstance(dip, DIPConfig)


def test_cli_restore_requires_model_and_mask(tmp_path, capsys, prior_dir, monkeypatch):
    save_image(_images(1)["img0"], tmp_path / "in.png")
    out = tmp_path / "o.png"

    def none_installed(*args, **kwargs):
        raise ValueError("available pretrained priors: (none installed)")

    monkeypatch.setattr("dipprior.diffusion.load_pretrained", none_installed)
    assert main(["restore", str(tmp_path / "in.png"), "--task", "denoise", "--out",
                 str(out)]) == 2
    assert "--model DIR is required" in capsys.readouterr().err
    assert main(["restore", str(tmp_path / "in.png"), "--task", "inpaint", "--model",
                 str(prior_dir), "--out", str(out)]) == 2
    assert "--mask" in capsys.readouterr().err
    assert main(["restore", str(tmp_path / "in.png"), "--task", "denoise", "--model",
                 str(prior_dir), "--t0", "late", "--out", str(out)]) == 2
    assert "t0" in capsys.readouterr().err
    assert not out.exists()


def test_cli_compare_writes_tables(tmp_path, prior_dir):
    data = tmp_path / "data"
    data.mkdir()
    for name, img in _images(2, size=20).items():
        save_image(img, data / f"{name}.png")
    out = tmp_path / "results"
    code = main(["compare", str(data), "--task", "denoise", "--size", "16", "--model",
                 str(prior_dir), "--steps", "2", "--ddpm-steps", "3", "--dip-iterations", "4",
                 "--dip-channels", "8", "--no-cbm3d", "--out", str(out), "--no-progress"])
    assert code == 0
    md = (out / "compare_denoise.md").read_text()
    csv = (out / "compare_denoise.csv").read_text()
    for method in ("DIP", "DDPM", "DIP->DDPM", "Observation->DDPM"):
        assert f"| {method}" in md
    assert len(csv.strip().splitlines()) == 1 + 2 * 4 + 4


@pytest.mark.slow
def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "dipprior.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "restore" in out and "compare" in out
