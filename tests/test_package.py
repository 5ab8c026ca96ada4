"""Studio as an installable package: the wheel carries the presets and the `studio` console script, and an
installed copy renders from any folder (it finds its presets as package data, not in a checkout)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT, video_facts


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "--disable-pip-version-check", "-w", str(out), str(ROOT)], capture_output=True, text=True,
                           cwd=out, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (found,) = out.glob("studio-*.whl")
    return found


def test_the_wheel_carries_presets_and_the_console_script(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {f"studio/presets/{tier}.toml" for tier in ("draft", "standard", "premium", "maximum")} <= names
    assert "studio/models.toml" in names  # the model catalogue the presets name their models from
    assert "studio/ui/app.py" in names and "studio/compose/render.py" in names
    assert not any(n.startswith(("tests/", "bench/", "notebooks/")) for n in names)
    assert "studio = studio.cli:main" in entry_points


def test_an_installed_copy_renders_from_another_folder(wheel, tmp_path):
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)  # what `pip install` puts in site-packages
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "script.md").write_text("# Rain\n\nRain falls on the roof. It drums all night.\n")
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import studio, studio.presets as p; print(studio.__file__); "
                            "print(p.load_preset('draft').source)"], capture_output=True, text=True, cwd=elsewhere,
                           env=env, timeout=60)
    assert where.returncode == 0, where.stderr
    module, preset = where.stdout.split()
    assert Path(module).is_relative_to(target) and Path(preset).is_relative_to(target)
    render = subprocess.run([sys.executable, "-m", "studio", "render", "script.md", "--preset", "draft", "--narrator",
                             "espeak", "--output", "x.mp4", "--quiet"], capture_output=True, text=True, cwd=elsewhere,
                            env=env, timeout=300)
    assert render.returncode == 0, render.stderr[-2000:]
    facts = video_facts(elsewhere / "x.mp4")
    assert (facts["width"], facts["height"]) == (854, 480) and facts["has_audio"] and facts["duration_s"] > 1.0


def test_the_console_script_runs():
    script = Path(sys.executable).with_name("studio")
    if not script.exists():
        pytest.skip("Studio is not installed in this environment (scripts/setup.sh installs it with pip install -e .)")
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0 and out.stdout.startswith("studio ")
