"""Set-up for running the notebooks as tests (``pytest --nbmake notebooks``): offline hubs and a private work folder.

The kernels nbmake starts inherit this environment, so the notebooks write their projects and renders into a temporary
folder instead of ``~/studio-notebooks``.
"""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ["STUDIO_NOTEBOOK_DIR"] = tempfile.mkdtemp(prefix="studio-notebooks-")
