"""The notebooks are committed without outputs and run top to bottom on small settings."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALL = {
    "01_thompson_sampling.ipynb": "HORIZON = 600\nRUNS = 16\nSEED = 3\n",
    "02_recommender_arms.ipynb": (
        "HORIZON = 300\nRUNS = 3\nSEED = 3\nDATA = 'synthetic'\n"
        "SYNTHETIC = {'n_users': 150, 'n_items': 300, 'n_ratings': 6000, 'random_state': 1}\n"
    ),
    "04_realtime.ipynb": (
        "DATA = 'synthetic'\n"
        "SYNTHETIC = {'n_users': 80, 'n_items': 150, 'n_ratings': 4000, 'random_state': 1}\n"
        "CUT = 0.8\nMAX_EVENTS = 400\nCOLD_USERS = 'include'\nRETRAIN_EVERY = 200\n"
        "N_BOOTSTRAP = 100\n"
    ),
    "05_multileave.ipynb": "RUNS = 40\nHORIZON = 150\nSEED = 0\nDATA = 'synthetic'\n",
}


def _load(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_committed_without_outputs(name):
    notebook = _load(name)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1  # one parameter cell, which the test swaps for small settings


def _images(notebook: nbformat.NotebookNode) -> list[bytes]:
    images = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                images.append(base64.b64decode(data["image/png"]))
    return images


def _text(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.extend(str(v) for k, v in output.get("data", {}).items() if k.startswith("text"))
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "min_images"), [("01_thompson_sampling.ipynb", 4),
                                                   ("02_recommender_arms.ipynb", 5),
                                                   ("04_realtime.ipynb", 3),
                                                   ("05_multileave.ipynb", 3)])
def test_notebook_runs_top_to_bottom(name, min_images, tmp_path):
    from nbclient import NotebookClient

    notebook = _load(name)
    for cell in notebook.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = SMALL[name]
    # The kernel is this interpreter's (ipykernel's native "python3" spec resolves to
    # sys.executable), so the notebooks see the installed packages; plots never open a window.
    env = {**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    os.environ.update(env)
    client = NotebookClient(notebook, timeout=240, kernel_name="python3", startup_timeout=600,
                            iopub_timeout=60, raise_on_iopub_timeout=True,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error

    images = _images(notebook)
    assert len(images) >= min_images
    for png in images:
        assert png[:8] == PNG_SIGNATURE and len(png) > 5_000
    text = _text(notebook)
    if name.startswith("01"):
        assert "Lai-Robbins constant" in text and "| Thompson Sampling |" in text
        # section 2's claim, whichever arm leads on these settings: the arm pulled most has the
        # narrowest posterior (attack: the text named Sequential, which the small run pulls 131
        # times of 600, the Autoencoder 400)
        most, narrowest = re.search(r"pulled most: (\w+); narrowest posterior: (\w+);",
                                    text).groups()
        assert most == narrowest
    elif name.startswith("04"):
        assert "| autoencoder/realtime - autoencoder/frozen | HR@10 |" in text
        assert "stream ratings share their second" in text and "real-time top 3" in text
        # section 1 names this run's leader rather than a ranking for every stream (attack: it
        # said popularity dominates the small synthetic stream, where autoencoder/retrain led);
        # the name printed is the table's highest HR@10
        table = {f"{arm}/{variant}": float(hr) for arm, variant, hr in re.findall(
            r"^\| (\w+) \| (\w+) \| \d+ \| \d+ \| ([\d.]+) \[", text, flags=re.MULTILINE)}
        leader, value = re.search(r"highest HR@10 in this run: (\w+/\w+) \(([\d.]+)\)",
                                  text).groups()
        assert len(table) == 12 and table[leader] == float(value) == max(table.values())
    elif name.startswith("05"):
        assert "impressions uniform (A/B/n) / multileave m=2" in text
        assert "| multileave m=2 |" in text and "inclusion probabilities" in text
        # a verdict printed "met" has its interval's lower bound at or above the target (attack:
        # 2.44 [1.39, 3.73] was called met against a target of 2)
        verdicts = re.findall(r": [\d.]+ \[([\d.]+), [\d.]+\] \(target >= ([\d.]+)[^:]*: met\)",
                              text)
        assert verdicts and all(float(low) >= float(target) for low, target in verdicts)
    else:
        assert "LinTS picks the truly best arm for" in text
        assert "| LinTS (user context) |" in text
