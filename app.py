"""Studio's web app: ``python app.py`` serves it on http://127.0.0.1:7860 (also the Hugging Face Spaces entry).

Environment: ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` (where to listen), ``STUDIO_DATA_DIR`` (where projects
live; ``/data/studio`` on a Space with persistent storage). ``python -m studio serve`` serves the same app together
with the HTTP API.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from studio.ui import launch  # noqa: E402

if __name__ == "__main__":
    launch()
