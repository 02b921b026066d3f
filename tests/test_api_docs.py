"""The API reference builds from the docstrings with pdoc (so it cannot rot unnoticed)."""

import html
import inspect
import pkgutil
import re
import warnings
from pathlib import Path

import pytest

import dipprior

README = Path(__file__).resolve().parents[1] / "README.md"


def _modules() -> list[str]:
    """``dipprior`` and its public top-level modules and packages.

    pdoc follows a package's ``__all__``, and ``dipprior.__all__`` lists the lazily imported
    names, not the sub-packages, so each is named explicitly (their own ``__all__`` then decides
    what their page shows)."""
    return ["dipprior"] + sorted(f"dipprior.{m.name}" for m in pkgutil.iter_modules(
        dipprior.__path__) if not m.name.startswith("_"))


def _words(text: str) -> str:
    """Letters and digits only, one space apart: markup (HTML, rST roles) does not count."""
    return " ".join(re.findall(r"[A-Za-z0-9]+", html.unescape(re.sub(r"<[^>]+>", " ", text))))


def _shows_docstring(page: str, obj) -> bool:
    """The first line of ``obj``'s docstring is on the page (as text, whatever the markup)."""
    return _words(inspect.getdoc(obj).splitlines()[0]) in _words(page)


@pytest.mark.slow
def test_api_reference_builds_with_pdoc(tmp_path):
    pdoc = pytest.importorskip("pdoc", reason="pdoc is in the `test` extra")
    from dipprior.pipeline import DIPInitializedSampler, SamplerConfig

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*_modules(), output_directory=tmp_path)
    failures = [str(w.message) for w in caught
                if any(sign in str(w.message) for sign in
                       ("Couldn't import", "Error loading", "does not resolve"))]
    assert not failures, failures

    assert (tmp_path / "index.html").is_file() and (tmp_path / "dipprior.html").is_file()
    for module in _modules()[1:]:
        assert (tmp_path / (module.replace(".", "/") + ".html")).is_file(), module
    page = (tmp_path / "dipprior" / "pipeline.html").read_text()
    assert _shows_docstring(page, dipprior.pipeline)
    for obj in (DIPInitializedSampler, SamplerConfig, SamplerConfig.replace):
        assert _shows_docstring(page, obj), obj.__qualname__
    for name in ("DIPInitializedSampler", "SamplerConfig"):
        assert f'id="{name}"' in page
    assert 'id="SamplerConfig.replace"' in page


def test_readme_builds_the_reference_of_every_module():
    """README's pdoc command names every public module (bash brace expansion)."""
    command = next(line for line in README.read_text().splitlines()
                   if "python -m pdoc" in line)
    names = re.search(r"dipprior\.\{([^}]*)\}", command)
    assert names and "dipprior " in command and "-o api-docs" in command, command
    listed = {f"dipprior.{n}" for n in names.group(1).split(",")}
    assert listed == set(_modules()[1:])
