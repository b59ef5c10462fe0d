"""The code in the README and in docs/writing-a-layer.md runs as written."""

import pathlib
import re

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _blocks(path):
    return re.findall(r"```python\n(.*?)```", (ROOT / path).read_text(), re.S)


def test_writing_a_layer_example_passes_gradcheck():
    import lamina as lm

    ns = {}
    for block in _blocks("docs/writing-a-layer.md"):
        exec(block, ns)  # noqa: S102 - our own documentation
    layer_cls = ns["SoftplusScale"]
    rng = np.random.default_rng(0)
    for x in (rng.standard_normal((1, 3)), rng.standard_normal((5, 3)), rng.standard_normal((4, 6))[:, ::2]):
        layer = layer_cls(3)
        layer.a.data[...] = rng.standard_normal(3).astype(np.float32)
        assert lm.testing.gradcheck(layer, x)
    with pytest.raises(lm.ShapeError, match=r"SoftplusScale\(features=3\)"):
        layer_cls(3)(np.zeros((2, 4), dtype=np.float32))


@pytest.mark.slow
def test_readme_loop_trains(capsys):
    (block,) = _blocks("README.md")
    exec(block, {})  # noqa: S102
    accuracy = float(re.search(r"test accuracy ([0-9.]+)", capsys.readouterr().out).group(1))
    assert accuracy >= 0.6


@pytest.mark.filterwarnings("ignore::lamina.PerformanceWarning")
@pytest.mark.parametrize("page", ["docs/training.md", "docs/saving.md", "docs/memory.md", "docs/recurrent.md",
                                  "docs/attention.md"])
def test_doc_pages_run_as_written(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the pages write under runs/
    ns = {}
    for block in _blocks(page):
        exec(block, ns)  # noqa: S102 - our own documentation
    assert (tmp_path / "runs").is_dir() or page in ("docs/memory.md", "docs/recurrent.md", "docs/attention.md")


def test_from_pytorch_page_runs_as_written(torch):
    for block in _blocks("docs/from-pytorch.md"):
        exec(block, {})  # noqa: S102 - our own documentation
