"""Every ```python block of README.md and docs/*.md runs as shown (issue #29).

The blocks of one file run in order in one namespace, as a reader pastes them, in a temporary
working directory.  A block right after ``<!-- snippet: not run (reason) -->`` is skipped: it
needs a file or a device that is not here (a published checkpoint, a download, a GPU).

What the test changes around the code, never in it, so that the whole file runs in seconds:

* one torch thread (conftest);
* ``load_pretrained`` loads what it is asked for, then hands back a tiny UNet (the tests' own)
  with the scheduler it loaded: a chain of 100 model calls on a 128x128 image then costs a
  second instead of half a minute;
* a DIP fit stops after :data:`DIP_ITERATIONS` iterations and training after
  :data:`TRAIN_STEPS` steps (the settings shown are built and checked as given; only the loops
  are cut short);
* what a snippet takes from its reader exists: ``photo.png``, a folder ``path/to/images``, a
  saved prior ``path/to/ddpm-folder`` and ``my_denoiser`` (a 3x3 mean as ``D(x, sigma)``).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import torch

from conftest import tiny_unet
from dipprior.operators import TASKS

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: pages whose blocks take more than a few seconds here
SLOW = {"README.md", "diffusion.md", "dip.md", "pipeline.md", "own_operator.md"}
DIP_ITERATIONS = 2
TRAIN_STEPS = 1

_NOT_RUN = re.compile(r"<!--\s*snippet:\s*not run\s*\((.+?)\)\s*-->")


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """``(line, code, reason)`` of every ```python block; ``reason`` is the not-run mark's,
    None for a block that runs."""
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            before = next((line for line in reversed(lines[:i]) if line.strip()), "")
            mark = _NOT_RUN.search(before)
            blocks.append((i + 1, "\n".join(lines[i + 1:j]) + "\n",
                           mark.group(1) if mark else None))
            i = j
        i += 1
    return blocks


def test_python_blocks_parse_and_honour_the_mark():
    text = ("a\n\n```python\nx = 1\n```\n\n<!-- snippet: not run (needs a GPU) -->\n\n"
            "```python\ny = 2\n```\n")
    assert python_blocks(text) == [(3, "x = 1\n", None), (9, "y = 2\n", "needs a GPU")]


def test_marks_are_rare_and_give_a_reason():
    marked = [(page.name, line) for page in PAGES
              for line, _, reason in python_blocks(page.read_text()) if reason is not None]
    assert len(marked) <= 6, marked
    for page in PAGES:  # a mark that names no block or no reason would be silently ignored
        for match in re.finditer(r"<!--\s*snippet:.*?-->", page.read_text()):
            assert _NOT_RUN.fullmatch(match.group(0)), (page.name, match.group(0))


def _my_denoiser(x: torch.Tensor, sigma: object) -> torch.Tensor:
    return torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


@pytest.fixture
def reader(tmp_path, monkeypatch):
    """A temporary working directory with the reader's files, and the fast stand-ins."""
    import dipprior.diffusion
    from dipprior.diffusion import Scheduler, save
    from dipprior.io import sample_image, save_image

    monkeypatch.chdir(tmp_path)
    save_image(sample_image("chelsea", size=160), tmp_path / "photo.png")
    images = tmp_path / "path" / "to" / "images"
    images.mkdir(parents=True)
    for name in ("astronaut", "coffee"):
        save_image(sample_image(name, size=96), images / f"{name}.png")
    save(tiny_unet(perturb=0.05), Scheduler(), tmp_path / "path" / "to" / "ddpm-folder")

    real_load = dipprior.diffusion.load_pretrained

    def load_pretrained(*args, **kwargs):
        _, scheduler = real_load(*args, **kwargs)
        return tiny_unet(perturb=0.05).eval(), scheduler

    monkeypatch.setattr(dipprior.diffusion, "load_pretrained", load_pretrained)
    fit_module = importlib.import_module("dipprior.dip.fit")
    real_resolve = fit_module._resolve

    def resolve(config, overrides):
        cfg = real_resolve(config, overrides)
        return cfg.replace(iterations=min(cfg.iterations, DIP_ITERATIONS))

    monkeypatch.setattr(fit_module, "_resolve", resolve)
    real_train = dipprior.diffusion.train

    def train(*args, steps, **kwargs):
        return real_train(*args, steps=min(steps, TRAIN_STEPS), **kwargs)

    monkeypatch.setattr(dipprior.diffusion, "train", train)
    tasks = dict(TASKS)  # a page may register a task of its own: gone afterwards
    yield {"__name__": "__snippet__", "my_denoiser": _my_denoiser}
    TASKS.clear()
    TASKS.update(tasks)


@pytest.mark.parametrize("page", [
    pytest.param(page, id=page.name, marks=[pytest.mark.slow] if page.name in SLOW else [])
    for page in PAGES if python_blocks(page.read_text())])
def test_snippets_run(page, reader, capsys):
    namespace = reader
    for line, code, reason in python_blocks(page.read_text()):
        if reason is not None:
            continue
        try:
            # padded so that a traceback names the line of the page
            exec(compile("\n" * line + code, str(page), "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{page.relative_to(ROOT)}, the block at line {line}: "
                                 f"{type(exc).__name__}: {exc}") from exc
