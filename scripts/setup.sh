#!/usr/bin/env bash
# Install Studio on a fresh Debian/Ubuntu machine: system packages, a virtual environment (.venv), Python packages.
#   scripts/setup.sh          what the app needs (espeak-ng, fonts, Python packages, the Piper voice extra)
#   scripts/setup.sh --dev    also what the tests and benchmarks need (ffprobe from Debian's ffmpeg, tesseract OCR
#                             with the language data the multilingual tests read, Chromium for the browser tests)
# STUDIO_NO_PIPER=1 skips the GPL-3.0 Piper extra (Studio then narrates with espeak-ng).
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1

# 1. System packages (only those missing, so a second run is quick and needs no network)
# Fonts for every script Studio draws (captions fall back to them through fontconfig, cards through studio.fonts),
# the smallest Debian set that covers them (download / installed sizes, Debian 12):
#   fonts-dejavu-core     Latin, Greek, Cyrillic, Hebrew, Arabic         1.1 MB / 2.9 MB
#   fonts-lohit-deva      Devanagari (Hindi, Marathi, Nepali)            0.1 MB / 0.2 MB
#   fonts-droid-fallback  Chinese, Japanese (Han and kana)               1.8 MB / 7.3 MB  (fonts-noto-cjk: 56 MB)
#   fonts-symbola         emoji, in outlines libass can draw             1.3 MB / 3.1 MB  (colour emoji are bitmaps)
#   fontconfig            fc-match and the font cache (libass and Studio find the fonts through it)
#   libfribidi0           bidi for Pillow's raqm layout (Arabic and Hebrew right to left, shaping)
fonts="fonts-dejavu-core fonts-lohit-deva fonts-droid-fallback fonts-symbola fontconfig libfribidi0"
packages="espeak-ng $fonts"
# OCR language data for the tests that read captions and cards back (Chinese, Japanese, Russian, Arabic, Hindi).
ocr="tesseract-ocr tesseract-ocr-chi-sim tesseract-ocr-jpn tesseract-ocr-rus tesseract-ocr-ara tesseract-ocr-hin"
[ "$dev" = 1 ] && packages="$packages ffmpeg $ocr"
[ "$dev" = 1 ] && packages="$packages chromium"  # Playwright drives it headless (no browser download needed)
python3 -m venv --help >/dev/null 2>&1 || packages="$packages python3-venv"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing system packages:$missing"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# 2. Python packages in .venv: Studio itself (editable, so the checkout is what runs), at the versions the lock files
#    pin. Without --dev only what the offline render needs (the core and the Piper extra); --dev adds every extra
#    (models, app, server, Ray, notebooks) and the test tools.
[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
extras="piper"
[ "${STUDIO_NO_PIPER:-0}" = 1 ] && extras=""
if [ "$dev" = 1 ]; then
  "${pip[@]}" -r requirements.txt -r requirements-dev.txt
  [ -n "$extras" ] && "${pip[@]}" -r requirements-piper.txt
  extras="models,ui,server,ray,notebooks,dev${extras:+,$extras}"
fi
"${pip[@]}" -c requirements.txt -c requirements-piper.txt -e ".${extras:+[$extras]}"
echo "set-up done: $(.venv/bin/python -m studio --version)"
