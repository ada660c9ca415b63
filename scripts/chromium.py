"""Which Chromium or Chrome to drive with Playwright (the browser test, scripts/screenshot.py): one already
installed, never a downloaded one."""
import os
import shutil

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
MACOS_BROWSERS = ("/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
                  "/Applications/Chromium.app/Contents/MacOS/Chromium")
HOW_TO_GET_ONE = ("no Chromium or Chrome found: apt-get install chromium (Debian/Ubuntu), brew install --cask chromium "
                  "(macOS), or set CHROMIUM=/path/to/chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"]


def find_chromium():
    """The browser to drive: $CHROMIUM if set, else the first of BROWSER_NAMES on PATH, else the usual macOS
    app; None when there is none. Pitfall: $CHROMIUM is taken as given, so a wrong path fails at launch."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    on_path = (shutil.which(name) for name in BROWSER_NAMES)
    return next((path for path in on_path if path), None) or next(
        (path for path in MACOS_BROWSERS if os.access(path, os.X_OK)), None)
