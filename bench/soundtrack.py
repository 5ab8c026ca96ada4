"""Loudness and true peak of the soundtrack Studio encodes, for the example scripts, with and without music.

    python bench/soundtrack.py                              # this checkout, Draft and Standard
    python bench/soundtrack.py --tiers draft,standard,premium,maximum
    python bench/soundtrack.py --studio /tmp/old            # another checkout's `studio` package (before/after)

Each example script (examples/*.md, *.txt) becomes a project with the rules storyboard writer and the espeak-ng
narrator (offline), with a plain still per scene (the soundtrack does not depend on pictures); then the soundtrack alone
is mixed, normalised and encoded as a render does (`studio.compose.audio.encode_soundtrack`), once without music and
once with bench/common.py's music bed, and the ENCODED AAC file is measured with ffmpeg's ebur128 (integrated
loudness, true peak), with the music level's largest rise in the gaps between narrations.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiers", default="draft,standard")
    parser.add_argument("--studio", type=Path, default=HERE.parent, help="the checkout whose studio package is measured")
    args = parser.parse_args()
    sys.path.insert(0, str(args.studio.resolve()))
    sys.path.insert(1, str(HERE))
    from dataclasses import replace

    from PIL import Image

    import studio  # before bench/common.py, which puts this checkout first on sys.path
    import common  # bench/common.py: the music bed
    from studio import load_preset
    from studio.compose import build_timeline
    from studio.compose.audio import encode_soundtrack
    from studio.media import ffmpeg_exe

    print(f"studio from {Path(studio.__file__).parent}", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="bench-soundtrack-"))
    music = common.make_music(folder / "music.wav")
    still = folder / "still.png"
    Image.new("RGB", (320, 180), (40, 90, 160)).save(still)
    projects = {}
    for script in sorted((HERE.parent / "examples").glob("*")):
        if script.suffix not in (".md", ".txt"):
            continue
        project = studio.write_storyboard(studio.read_script(script), mode="script", writer="rules")
        project = project.save(folder / script.stem)
        project = studio.narrate(project, narrator="espeak")
        projects[script.name] = replace(project, scenes=tuple(replace(s, visual=still) for s in project.scenes))

    def measure(path: Path) -> tuple[float, float]:
        log = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostats", "-i", str(path), "-af", "ebur128=peak=true",
                              "-f", "null", "-"], capture_output=True, text=True, check=True).stderr
        log = log[log.rindex("Summary:"):]
        return (float(re.search(r"I:\s*(-?[\d.]+|-inf)", log).group(1)),
                float(re.search(r"Peak:\s*(-?[\d.]+|-inf)", log).group(1)))

    print("| script | tier | music | target | integrated | true peak | channels | seconds of audio | time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, project in projects.items():
        for tier in args.tiers.split(","):
            preset = load_preset(tier)
            for with_music in (False, True):
                p = replace(project, music=music if with_music else None, music_volume=0.3)
                timeline = build_timeline(p, preset, encoder="libx264")
                work = Path(tempfile.mkdtemp(dir=folder))
                start = time.perf_counter()
                out = encode_soundtrack(timeline, work)
                took = time.perf_counter() - start
                integrated, peak = measure(out)
                channels = _channels(out)
                print(f"| {name} | {tier} | {'yes' if with_music else 'no'} | {preset.loudness_lufs:g} | "
                      f"{integrated:.1f} LUFS | {peak:.1f} dBTP | {channels} | {timeline.duration_s:.1f} | {took:.2f} s |",
                      flush=True)


def _channels(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return container.streams.audio[0].codec_context.channels


if __name__ == "__main__":
    main()
