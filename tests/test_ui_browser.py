"""The studio in a real browser: Playwright driving Debian's Chromium (headless) against ``python app.py``.

Screenshots of every panel go to ``test-artifacts/ui/`` (git-ignored); ``docs/`` holds a committed set for the README.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian's chromium is missing (scripts/setup.sh --dev installs it)")
sync_api = pytest.importorskip("playwright.sync_api")

from ._servers import running  # noqa: E402
from .conftest import ROOT, video_facts  # noqa: E402

ARTIFACTS = ROOT / "test-artifacts" / "ui"
BRIEF = "How honeybees turn nectar into honey, for curious children"
EDITED = "Bees sip nectar from flowers and carry it home to the hive."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("browser") / "data"
    data.mkdir()
    with running(["app.py"], data) as url:
        yield url, data


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(45_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    failed_before = request.session.testsfailed
    yield page
    if request.session.testsfailed > failed_before:  # keep what the page showed, to see why
        shot(page, f"failed-{request.node.name}")
    context.close()
    assert not errors, f"the page raised JavaScript errors: {errors}"


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def project_on_disk(data: Path, project_id: str) -> dict:
    return json.loads((data / "projects" / project_id / "project.json").read_text())


def audio_state(data: Path, project_id: str) -> dict[str, tuple[str, str, int] | None]:
    """scene id -> (audio file, sha256, mtime_ns) as the project on disk says, None when it has no audio."""
    folder = data / "projects" / project_id
    out = {}
    for scene in project_on_disk(data, project_id)["scenes"]:
        if scene["audio"]:
            path = folder / scene["audio"]
            out[scene["id"]] = (scene["audio"], hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        else:
            out[scene["id"]] = None
    return out


def wait_for(predicate, timeout_s: float = 30.0, what: str = "a condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def cards_narrated(page) -> None:
    """Wait until the Voice panel's cards are drawn again with every scene's narration (typing into a card before
    that redraw would type into a box it replaces)."""
    wait_for(lambda: page.locator(".scene-head").count() and not any(
        "not narrated yet" in t for t in page.locator(".scene-head").all_inner_texts()), 30, "the cards' redraw")
    page.wait_for_timeout(300)


def edit_narration(page, data: Path, project_id: str, row: int, text: str) -> None:
    """Type `text` into the narration cell of table row `row` (0-based) and wait until the project on disk has it."""
    cell = page.locator(f'#storyboard-table [data-testid="cell-{row}-1"]')
    cell.dblclick()
    editor = cell.locator("textarea, input").first
    editor.fill(text)
    editor.press("Enter")
    wait_for(lambda: project_on_disk(data, project_id)["scenes"][row]["narration"] == text, 15, "the table edit")


def write_storyboard(page, url: str, script: str, timeout_ms: int = 45_000) -> str:
    """Open the studio, type a script, write the storyboard; returns the new project's id."""
    page.goto(url + "/")
    page.locator("#brief-source textarea").fill(script)
    page.click("#write-storyboard")
    page.locator('#storyboard-table [data-testid="cell-0-1"]').wait_for(timeout=timeout_ms)
    code = page.locator(".studio-header code")
    wait_for(lambda: code.count() and code.first.inner_text().startswith("p"), what="the project id in the header")
    return code.first.inner_text()


def test_brief_to_video_in_the_browser(server, page):
    url, data = server
    # 1. Brief: type a brief and write the storyboard (offline: an outline from the brief's own words).
    page.goto(url + "/")
    page.locator("#brief-source textarea").fill(BRIEF)
    page.locator("#brief-style input, #brief-style textarea").first.fill("warm flat illustration")
    shot(page, "1-brief")
    page.click("#write-storyboard")
    page.locator('#storyboard-table [data-testid="cell-3-1"]').wait_for()
    project_id = page.locator(".studio-header code").first.inner_text()
    scenes = project_on_disk(data, project_id)["scenes"]
    assert len(scenes) == 4 and scenes[0]["narration"].startswith("This video is about how honeybees turn nectar")
    assert "rules" in page.locator(".studio-notes").first.inner_text()  # which writer ran, and why

    # 2. Voice: narrate every scene.
    tab(page, "3 · Voice")
    page.click("#narrate-all")
    wait_for(lambda: all(audio_state(data, project_id).values()), 60, "every scene's narration")
    page.locator(".voice-audio audio").nth(3).wait_for(state="attached")
    before = audio_state(data, project_id)

    # 3. Storyboard: edit scene 2's narration in the table.
    tab(page, "2 · Storyboard")
    edit_narration(page, data, project_id, 1, EDITED)
    edited_id = scenes[1]["id"]
    assert audio_state(data, project_id)[edited_id] is None  # the edit dropped only that scene's audio
    page.locator('#storyboard-table [data-testid="cell-1-0"]').click()
    shot(page, "2-storyboard")

    # 4. Voice: narrate only that scene again, from its card.
    tab(page, "3 · Voice")
    card_text = page.locator(".voice-text textarea").nth(1)
    wait_for(lambda: card_text.input_value() == EDITED, 15, "the card to show the edited text")
    page.locator(".voice-narrate").nth(1).click()
    wait_for(lambda: audio_state(data, project_id)[edited_id], 60, "the edited scene's new narration")
    after = audio_state(data, project_id)
    assert after[edited_id][1] != before[edited_id][1]
    for scene_id in before:
        if scene_id != edited_id:
            assert after[scene_id] == before[scene_id], "another scene's audio file changed"
    page.locator(".voice-audio audio").nth(3).wait_for(state="attached")
    wait_for(lambda: page.evaluate("""() => [...document.querySelectorAll('.voice-audio')].every(player => {
        const times = player.querySelectorAll('time');  // the last one shows the clip's length once it has loaded
        return times.length && times[times.length - 1].textContent.trim() !== '0:00'; })"""), 30,
             "the players to load their audio")
    shot(page, "3-voice")

    # 5. Visuals: paint every scene.
    tab(page, "4 · Visuals")
    page.click("#paint-all")
    wait_for(lambda: page.locator("#visuals-gallery img").count() == 4, 60, "a card per scene in the gallery")
    shot(page, "4-visuals")

    # 6. Compose: preview one scene, then render at Draft; the video plays and the download is a real MP4.
    tab(page, "5 · Compose")
    page.click("#preview")
    page.locator("#preview-video video").wait_for()
    page.click("#render")
    page.locator("#render-progress [data-state='done']").wait_for(timeout=120_000)
    page.locator("#render-video video").wait_for()
    playing = page.evaluate("""async () => {
        const video = document.querySelector('#render-video video');
        video.muted = true;
        await video.play();
        const start = video.currentTime;
        await new Promise(resolve => setTimeout(resolve, 1200));
        return {start, now: video.currentTime, readyState: video.readyState, duration: video.duration,
                error: video.error && video.error.code};
    }""")
    assert playing["error"] is None and playing["readyState"] >= 2, playing
    assert playing["now"] > playing["start"] + 0.3, f"the video does not play: {playing}"
    with page.expect_download() as download_info:
        page.click("#download")
    mp4 = Path(download_info.value.path())
    facts = video_facts(mp4)
    assert (facts["width"], facts["height"]) == (854, 480) and facts["has_audio"] and facts["video_codec"] == "h264"
    assert abs(facts["duration_s"] - playing["duration"]) < 0.1
    page.evaluate("document.querySelector('#render-video video').pause()")
    shot(page, "5-compose")

    # 7. Projects: the project and the finished job are listed.
    tab(page, "6 · Projects")
    page.locator("#jobs-table [data-testid='cell-0-3']").wait_for()
    assert page.locator("#jobs-table [data-testid='cell-0-3']").inner_text().strip() == "done"
    assert project_id in page.locator("#projects-table").inner_text()
    shot(page, "6-projects")


def test_cancel_a_render_after_a_reload(server, page):
    psutil = pytest.importorskip("psutil")
    url, data = server
    script = "\n\n".join(f"Paragraph {n} of a longer film about rivers, rain and the long way to the sea."
                         for n in range(1, 9))
    write_storyboard(page, url, script)
    tab(page, "5 · Compose")
    page.get_by_label("Standard").check()  # 720p: long enough to cancel while it runs
    page.click("#render")
    page.locator("#render-progress [data-state='running']").wait_for(timeout=60_000)

    # A reload finds the same project and reattaches to the running job.
    page.reload()
    tab(page, "5 · Compose")
    running_bar = page.locator("#render-progress [data-state='running']")
    running_bar.wait_for(timeout=20_000)
    cancel = page.locator("#cancel")
    wait_for(lambda: cancel.is_enabled(), 10, "Cancel to be enabled after the reload")
    started = time.monotonic()
    cancel.click()
    page.locator("#render-progress [data-state='canceled']").wait_for(timeout=30_000)
    latency_s = time.monotonic() - started
    print(f"cancel to `canceled` on the page: {latency_s:.2f} s")
    assert latency_s < 15, f"the cancel took {latency_s:.1f} s"
    assert page.locator("#render").is_enabled() and not cancel.is_enabled()

    # Nothing keeps running: no ffmpeg or espeak-ng below the server; the job's folder keeps no video or assets.
    server_process = psutil.Process(url.pid)

    def workers() -> list:
        return [p for p in server_process.children(recursive=True) if "ffmpeg" in p.name() or "espeak" in p.name()]

    wait_for(lambda: not workers(), 10, "ffmpeg and espeak-ng to end")
    folders = [f.parent for f in (data / "jobs").glob("*/*/project.json")
               if json.loads(f.read_text())["scenes"][0]["narration"].startswith("Paragraph 1 of a longer film")]
    assert len(folders) == 1
    assert not list(folders[0].glob("renders/*")) and not list(folders[0].glob("assets/*"))
    shot(page, "5-compose-canceled")


def test_a_voice_card_can_be_typed_into_and_narrates_only_its_scene(server, page):
    """Issue 12, item 1: the Narration box of a scene card in the Voice panel is editable; typing there and pressing
    that card's narrate button narrates that scene with the typed text, and no other scene's audio changes."""
    url, data = server
    project_id = write_storyboard(page, url, "# Leaves\n\nLeaves turn red in autumn.\n\nThen they fall to the ground.")
    tab(page, "3 · Voice")
    page.click("#narrate-all")
    wait_for(lambda: all(audio_state(data, project_id).values()), 60, "every scene's narration")
    cards_narrated(page)
    before = audio_state(data, project_id)
    typed = "Typed right into the card, this line is new."
    card_text = page.locator(".voice-text textarea").nth(1)
    card_text.fill(typed, timeout=10_000)  # a disabled box cannot be typed into: this times out
    assert card_text.input_value() == typed
    page.locator(".voice-narrate").nth(1).click()
    second = project_on_disk(data, project_id)["scenes"][1]["id"]
    wait_for(lambda: project_on_disk(data, project_id)["scenes"][1]["narration"] == typed
             and audio_state(data, project_id)[second] and audio_state(data, project_id)[second] != before[second],
             60, "the typed narration, narrated")
    after = audio_state(data, project_id)
    assert [scene_id for scene_id in before if after[scene_id] != before[scene_id]] == [second]



def test_your_own_recording_narrates_a_scene_and_the_video_follows_it(server, page, tmp_path):
    """Issue 14: upload a WAV on one scene's voice card; the card says "your recording"; the render's length follows
    the recording and a caption is burned in while its words are heard."""
    import numpy as np

    from studio import load_preset
    from studio.media import run_ffmpeg_output
    from studio.testing import make_recording

    url, data = server
    first_text = "Honey keeps for years in a sealed jar."
    project_id = write_storyboard(page, url, f"# Honey\n\n{first_text}\n\nBees make it from nectar.")
    take = make_recording(tmp_path / "my honey take.wav", first_text, rate_wpm=100, pad_s=(1.0, 1.5))
    tab(page, "3 · Voice")
    page.locator(".voice-take").first.locator("input[type=file]").set_input_files(str(take))
    scene_id = project_on_disk(data, project_id)["scenes"][0]["id"]
    wait_for(lambda: project_on_disk(data, project_id)["scenes"][0]["recording"]
             and audio_state(data, project_id)[scene_id], 60, "the recording to narrate scene 1")
    first = project_on_disk(data, project_id)["scenes"][0]
    head = page.locator(".scene-head").first
    wait_for(lambda: f"your recording, {first['audio_s'] if 'audio_s' in first else first['audio_duration_s']:.1f} s"
             in head.inner_text(), 20, "the card to say it is your recording")
    assert "your recording" in page.locator("#voice-status").inner_text()
    page.click("#narrate-all")  # the other scene by the narrator; the recording is kept
    wait_for(lambda: all(audio_state(data, project_id).values()), 60, "every scene's narration")
    wait_for(lambda: "1 with your own recording" in page.locator("#voice-status").inner_text(), 20,
             "the status line to count the recording")
    scenes = project_on_disk(data, project_id)["scenes"]
    assert scenes[0]["audio"] == first["audio"]
    # The cards are drawn again with what Narrate all made: scene 2's card has its length, scene 1's is still yours.
    wait_for(lambda: "not narrated" not in page.locator(".scene-head").nth(1).inner_text(), 20,
             "scene 2's card to show its narration")
    assert "your recording" in page.locator(".scene-head").first.inner_text()
    shot(page, "3-voice-own-recording")

    tab(page, "5 · Compose")
    page.click("#render")
    page.locator("#render-progress [data-state='done']").wait_for(timeout=120_000)
    with page.expect_download() as download_info:
        page.click("#download")
    mp4 = Path(download_info.value.path())
    facts = video_facts(mp4)
    draft = load_preset("draft")
    spoken = [s["audio_duration_s"] for s in scenes]
    assert spoken[0] > 3.0  # the slow reader's length (espeak-ng at 100 words a minute), trimmed
    expected = sum(draft.lead_s + s + draft.tail_s for s in spoken) - draft.transition_s
    assert facts["has_audio"] and facts["duration_s"] == pytest.approx(expected, abs=0.25)

    # The soundtrack holds the recording where scene 1 plays: sound while its words are said, none in the lead.
    sound = np.frombuffer(run_ffmpeg_output(["-i", mp4, "-t", f"{draft.lead_s + spoken[0]:.3f}", "-ac", "1",
                                             "-ar", "8000", "-f", "f32le", "pipe:1"]), np.float32)
    words = scenes[0]["words"]
    assert [w[0] for w in words] == first_text.split()
    at = lambda t: float(np.sqrt(np.mean(sound[int(t * 8000):int(t * 8000) + 800] ** 2)))  # noqa: E731
    middle = draft.lead_s + (words[2][1] + words[2][2]) / 2
    assert at(middle - 0.05) > 10 * at(0.0) + 1e-4

    # A caption is burned in while its words are heard, and none before the first word.
    def band(time_s: float) -> np.ndarray:
        raw = run_ffmpeg_output(["-ss", f"{time_s:.3f}", "-i", mp4, "-frames:v", "1", "-f", "rawvideo", "-pix_fmt",
                                 "gray", "pipe:1"])
        frame = np.frombuffer(raw, np.uint8).reshape(facts["height"], facts["width"])
        return frame[int(facts["height"] * 0.7):].astype(int)

    def ink(time_s: float) -> int:
        return int((band(time_s) > 235).sum())  # the captions' white text (the cards are drawn in darker tones)

    before, during = ink(0.04), ink(middle)
    print(f"caption ink before the first word {before}, during word 3 {during}")
    assert during > 200 and during > 4 * before, (before, during)



def test_a_take_recorded_with_the_microphone_narrates_its_scene(server, browser):
    """The voice card's microphone: Chromium's fake capture device (a beep) records 2.5 s; Stop hands the take to
    the server, which keeps it as the scene's recording and narrates the scene with it."""
    url, data = server
    # A second Chromium of the same Playwright, with a fake microphone that needs no permission prompt.
    with_microphone = browser.browser_type.launch(executable_path=CHROMIUM, headless=True, args=[
        "--no-sandbox", "--disable-dev-shm-usage", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
    try:
        context = with_microphone.new_context(viewport={"width": 1280, "height": 900})
        context.grant_permissions(["microphone"])
        page = context.new_page()
        page.set_default_timeout(45_000)
        project_id = write_storyboard(page, url, "# Beep\n\nA beep for a voice.\n\nThen the narrator.")
        tab(page, "3 · Voice")
        take = page.locator(".voice-take").first
        take.locator("button[aria-label='Record audio']").click()
        take.locator("button", has_text="Record").first.click()
        page.wait_for_timeout(2500)
        take.locator("button", has_text="Stop").first.click()
        wait_for(lambda: project_on_disk(data, project_id)["scenes"][0]["audio"], 60, "the recorded take's audio")
        scene = project_on_disk(data, project_id)["scenes"][0]
        assert scene["recording"].startswith("uploads/") and 1.0 < scene["audio_duration_s"] < 4.0
        assert (data / "projects" / project_id / scene["recording"]).is_file()
        wait_for(lambda: "your recording" in page.locator(".scene-head").first.inner_text(), 20, "the card")
        assert project_on_disk(data, project_id)["scenes"][1]["recording"] is None
    finally:
        with_microphone.close()

# -- issue 12: the studio as a person uses it, end to end ----------------------------------------------------------
DOCS = ROOT / "docs"


def panel_shot(page, name: str) -> None:
    """A screenshot of the page as it is now, for test-artifacts/ui/ (the README's docs/ set is copied from them)."""
    shot(page, f"walk-{name}")


def toast_text(page) -> str:
    return " ".join(page.locator(".toast-body").all_inner_texts())


def visual_state(data: Path, project_id: str) -> dict[str, str | None]:
    """scene id -> its visual's file name, as the project on disk says."""
    return {s["id"]: s["visual"] for s in project_on_disk(data, project_id)["scenes"]}


def job_rows(data: Path) -> list[dict]:
    import sqlite3

    with sqlite3.connect(data / "studio.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT id, state, preset FROM jobs ORDER BY created_at")]


def test_the_studio_walked_through_as_a_person_uses_it(server, page):
    """Issue 12's walk: brief -> storyboard edits (a refused split keeps the Scene number in sight) -> type into a
    voice card and narrate only it -> repaint one scene -> preview scene 3 (the picker stays on 3) -> render Standard
    9:16 -> reload (panel, project, preset and video come back) -> Maximum at 1:1 on a two-scene project, with a time
    estimate first -> a blank scene leaves the others narrated and is refused by Render in the user's words -> the
    one-click path makes a video."""
    url, data = server

    # 1. Brief at 9:16 -> the Storyboard panel, which says plainly that an offline outline is the brief's own words.
    page.goto(url + "/")
    page.locator("#brief-source textarea").fill(BRIEF)
    page.get_by_label("9:16").check()
    panel_shot(page, "brief")
    page.click("#write-storyboard")
    page.locator('#storyboard-table [data-testid="cell-3-1"]').wait_for()
    notice = page.locator("#outline-notice")
    assert "outline made of your brief's own words" in notice.inner_text()
    assert "Paste your script" in notice.inner_text() and "OPENAI_BASE_URL" in notice.inner_text()
    project_id = page.locator(".studio-header code").first.inner_text()
    scenes = project_on_disk(data, project_id)["scenes"]
    ids = [s["id"] for s in scenes]

    # 2. Storyboard: edit scene 2 in the table; a split the project refuses is a warning, and the Scene number
    #    stays usable (an error badge used to cover it).
    edit_narration(page, data, project_id, 1, EDITED)
    number = page.locator("#scene-number input")
    number.fill("2")
    page.click("#split-scene")  # one sentence: nothing to split
    wait_for(lambda: "nothing to split" in toast_text(page), 10, "the split's warning")
    assert page.locator("#scene-number .error").count() == 0, "an error badge covers the Scene number"
    number.fill("1")  # still there to change
    assert number.input_value() == "1" and len(project_on_disk(data, project_id)["scenes"]) == 4
    panel_shot(page, "storyboard")

    # 3. Voice: narrate all (per-scene progress on the panel), then type into scene 2's card and narrate only it.
    page.click("#next-voice")
    page.click("#narrate-all")
    wait_for(lambda: "Narrated 4 scenes" in page.locator("#voice-status").inner_text(), 90, "Narrate all")
    cards_narrated(page)
    before = audio_state(data, project_id)
    typed = "Bees carry the nectar home in a second stomach."
    page.locator(".voice-text textarea").nth(1).fill(typed)
    page.locator(".voice-narrate").nth(1).click()
    wait_for(lambda: "Narrated scene 2" in page.locator("#voice-status").inner_text(), 60, "scene 2's narration")
    after = audio_state(data, project_id)
    assert [i for i in ids if after[i] != before[i]] == [ids[1]]
    assert project_on_disk(data, project_id)["scenes"][1]["narration"] == typed
    panel_shot(page, "voice")

    # 4. Visuals: paint all, then a new seed for scene 2 repaints only it; the 9:16 gallery shows every card whole.
    page.click("#next-visuals")
    page.click("#paint-all")
    wait_for(lambda: page.locator("#visuals-gallery img").count() == 4, 60, "a card per scene")
    painted = visual_state(data, project_id)
    page.locator("#visual-scene input").click()
    page.get_by_role("option", name="2 · ").click()
    page.click("#new-seed")
    wait_for(lambda: "Painted scene 2" in page.locator("#visuals-status").inner_text(), 60, "scene 2's repaint")
    repainted = visual_state(data, project_id)
    assert [i for i in ids if repainted[i] != painted[i]] == [ids[1]]
    box = page.locator("#visuals-gallery").bounding_box()
    last = page.locator("#visuals-gallery .thumbnail-item").last.bounding_box()
    assert last["y"] + last["height"] <= box["y"] + box["height"] + 1, "the gallery cuts off a card"
    panel_shot(page, "visuals")

    # 5. Compose: preview scene 3; the picker stays on scene 3 afterwards.
    page.click("#next-compose")
    page.locator("#preview-scene input").click()
    page.get_by_role("option", name="3 · ").click()
    page.click("#preview")
    page.locator("#preview-video video").wait_for(timeout=90_000)
    page.get_by_text("Scene 3: ").wait_for()  # the preview's status line
    page.wait_for_timeout(1000)  # the redraw after the preview
    assert page.locator("#preview-scene input").input_value().startswith("3 · "), "the picker snapped back"

    # 6. Render at Standard: the bar, then the video; the download is named after the title.
    page.get_by_label("Standard").check()
    wait_for(lambda: "720x1280" in page.locator("#render-estimate").inner_text(), 10, "the Standard estimate")
    page.click("#render")
    page.locator("#render-progress [data-state='done']").wait_for(timeout=180_000)
    page.locator("#render-video video").wait_for()
    with page.expect_download() as download_info:
        page.click("#download")
    download = download_info.value
    assert download.suggested_filename.startswith("How-honeybees-turn-nectar-into-honey")
    assert download.suggested_filename.endswith(".mp4")
    facts = video_facts(Path(download.path()))
    assert (facts["width"], facts["height"]) == (720, 1280) and facts["has_audio"]
    panel_shot(page, "compose")

    # 7. Reload: the same panel, project, preset and video.
    page.reload()
    page.locator("#render-video video").wait_for(timeout=30_000)
    assert page.get_by_role("tab", name="5 · Compose").get_attribute("aria-selected") == "true"
    assert page.locator(".studio-header code").first.inner_text() == project_id
    assert page.get_by_label("Standard").is_checked()
    page.locator("#render-progress [data-state='done']").wait_for(timeout=20_000)

    # 8. A two-scene project at 1:1 renders at Maximum (this machine's app allows 4K), with an estimate first.
    page.get_by_role("tab", name="1 · Brief").click()
    page.locator("#brief-source textarea").fill("# Two\n\nThe first scene is short.\n\nThe second is short too.")
    page.get_by_label("1:1").check()
    page.click("#write-storyboard")
    page.locator('#storyboard-table [data-testid="cell-1-1"]').wait_for()
    wait_for(lambda: page.locator(".studio-header code").first.inner_text() != project_id, 15, "the new project")
    two = page.locator(".studio-header code").first.inner_text()
    page.get_by_role("tab", name="5 · Compose").click()
    page.get_by_label("Maximum").check()
    wait_for(lambda: "2160x2160" in page.locator("#render-estimate").inner_text(), 10, "the Maximum estimate")
    assert "on this machine" in page.locator("#render-estimate").inner_text()
    page.click("#render")
    page.locator("#render-progress [data-state='done']").wait_for(timeout=300_000)
    maximum = [r for r in job_rows(data) if r["preset"] == "maximum"]
    assert maximum and maximum[-1]["state"] == "done"
    kept = data / "projects" / two / "renders" / "last.mp4"
    facts = video_facts(kept)
    assert (facts["width"], facts["height"]) == (2160, 2160) and facts["has_audio"]

    # 9. A blank scene: Narrate all narrates the others and flags it; Render refuses in the user's words and
    #    leaves no green bar or download of the earlier render.
    page.get_by_role("tab", name="2 · Storyboard").click()
    page.locator("#scene-number input").fill("2")
    page.click("#add-scene")
    wait_for(lambda: len(project_on_disk(data, two)["scenes"]) == 3, 15, "the blank third scene")
    page.get_by_role("tab", name="3 · Voice").click()
    page.click("#narrate-all")
    wait_for(lambda: "Scene 3 is empty" in page.locator("#voice-status").inner_text(), 60, "the blank scene's warning")
    states = audio_state(data, two)
    blank = project_on_disk(data, two)["scenes"][2]["id"]
    assert states[blank] is None and all(v for k, v in states.items() if k != blank)
    assert "empty" in page.locator(".scene-head").filter(has_text="Scene 3 ·").first.inner_text()
    page.get_by_role("tab", name="5 · Compose").click()
    page.click("#render")
    refused = page.locator("#render-progress [data-state='refused']")
    refused.wait_for(timeout=15_000)
    said = refused.inner_text()
    assert "Scene 3 is empty: write its narration or delete it" in said
    assert "storyboard[" not in said and "duration_s" not in said and blank not in said
    assert page.locator("#render-progress [data-state='done']").count() == 0
    assert not page.locator("#download").is_visible()
    assert page.locator("#render-video video").count() == 1  # the last good video stays to watch

    # 10. One click: a script -> "Make the video" -> the Compose panel's one bar -> a video, and the panels show
    #     what the job made.
    page.get_by_role("tab", name="1 · Brief").click()
    page.locator("#brief-source textarea").fill("# One click\n\nRain falls on the hills.\n\nRivers carry it to the sea.")
    page.get_by_label("16:9").check()
    page.click("#make-video")
    page.locator("#render-progress [data-state]").wait_for(timeout=30_000)
    assert page.get_by_role("tab", name="5 · Compose").get_attribute("aria-selected") == "true"
    page.locator("#render-progress [data-state='done']").wait_for(timeout=180_000)
    page.locator("#render-video video").wait_for(timeout=30_000)
    one = page.locator(".studio-header code").first.inner_text()
    assert one not in (project_id, two)
    wait_for(lambda: all(audio_state(data, one).values()), 20, "the job's narration taken back into the project")
    page.get_by_role("tab", name="3 · Voice").click()
    wait_for(lambda: "not narrated yet" not in " ".join(page.locator(".scene-head").all_inner_texts()), 15,
             "the voice cards to show the job's narration")
    page.get_by_role("tab", name="6 · Projects").click()
    page.locator("#projects-table [data-testid='cell-2-0']").wait_for()
    panel_shot(page, "projects")


# -- issue 13: models within reach, from the studio's own Models panel ----------------------------------------------
@pytest.fixture(scope="module")
def hub_studio(tmp_path_factory):
    """`python app.py` with the Hugging Face hub stood in on loopback (HF_ENDPOINT), serving a tiny Stable Diffusion
    as stabilityai/sd-turbo (Draft's painter) slowly enough to watch its download and cancel it."""
    from studio import testing

    from .hub_standin import HubStandin

    root = tmp_path_factory.mktemp("hub-studio")
    folder = testing.tiny_sd(root / "sd")
    for weights in folder.rglob("*.safetensors"):  # laid out as sd-turbo's fp16 files, which its allow-list takes
        weights.rename(weights.with_name(weights.name.replace(".safetensors", ".fp16.safetensors")))
    data = root / "data"
    data.mkdir()
    with HubStandin() as hub:
        hub.add_repo("stabilityai/sd-turbo", folder, rate=40_000)
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(root / "hub-cache"), "HF_HUB_OFFLINE": "0",
               "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": ""}
        with running(["app.py"], data, env=env) as url:
            yield url, root / "hub-cache", hub


def test_the_models_panel_downloads_with_progress_cancels_and_resumes(hub_studio, page):
    url, cache, hub = hub_studio
    # A fresh server's first storyboard (its first imports and checks) while the other test worker renders 4K: slow.
    write_storyboard(page, url, "# Hills\n\nRain falls on the hills.\n\nRivers carry it to the sea.", 150_000)
    tab(page, "4 · Visuals")  # the step panel says which missing model would paint, and where to get it
    hint = page.locator("#visuals-hint")
    wait_for(lambda: "sd-turbo" in hint.inner_text(), 15, "the missing painter's hint")
    assert "would paint these scenes" in hint.inner_text() and "Models" in hint.inner_text()

    tab(page, "7 · Models")
    table = page.locator("#models-table")
    table.get_by_text("sd-turbo", exact=True).wait_for()
    assert "non-commercial" in table.inner_text() and "apache-2.0" in table.inner_text()  # licences beside each
    page.locator("#models-pick input").click()
    page.get_by_role("option", name="sd-turbo · ").click()
    wait_for(lambda: "licence" in page.locator("#models-details").inner_text(), 10, "the model's details")
    page.click("#models-download")
    progress = page.locator("#models-progress")
    wait_for(lambda: "running" in progress.inner_text() and "MB" in progress.inner_text(), 20, "live progress")
    wait_for(lambda: sum(hub.bytes_served.values()) > 60_000, 20, "some bytes to arrive")
    page.click("#models-cancel")
    wait_for(lambda: "canceled" in progress.inner_text(), 20, "the cancel")
    served_at_cancel = sum(hub.bytes_served.values())
    assert served_at_cancel < 330_000, "the download ran to the end"
    shot(page, "7-models-canceled")

    page.click("#models-download")  # again: it resumes, and ends with the model here
    wait_for(lambda: "done" in progress.inner_text(), 60, "the resumed download")
    assert sum(hub.bytes_served.values()) < served_at_cancel + 330_000  # what was fetched was not fetched again
    wait_for(lambda: "here: present" in page.locator("#models-details").inner_text(), 15, "the model to be here")
    assert list(cache.glob("models--stabilityai--sd-turbo/snapshots/*/unet/diffusion_pytorch_model.fp16.safetensors"))
    shot(page, "7-models")

    # `auto` now paints with the downloaded model.
    tab(page, "4 · Visuals")
    page.click("#paint-all")
    wait_for(lambda: "Painted 2 scenes" in page.locator("#visuals-status").inner_text(), 120, "the painting")
    assert "painter: diffusers-image" in page.locator(".studio-notes").all_inner_texts().__str__()
