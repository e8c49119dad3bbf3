"""A tiny model behind `aiaic serve` on a free local port, for the page's tests."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from aiaic_jax import runs, serve
from aiaic_jax.convert.common import save_variables
from aiaic_jax.inference import Colorizer
from aiaic_jax.models.aiaic import build_model
from tests import tiny_model

SIZE = 32


@contextlib.contextmanager
def tiny_server(root, max_upload_mb: float = 2) -> Iterator[str]:
    """Serves a run of the tiny model (random variables, stage3/final and its config.json,
    written under `root`) in a thread; yields the page's URL."""
    config = tiny_model.run_config(image_size=SIZE, audio_seconds=0.5)
    variables = tiny_model.random_variables(build_model(config.model), SIZE, seed=1)
    stage = root / "run" / "stage3"
    save_variables(stage / "final", variables)
    (stage / "config.json").write_text(runs.config_document(config, {"name": "stage3"}))
    colorizer = Colorizer.from_run(root / "run", batch_size=4)
    http, service = serve.serve(
        colorizer, port=0, max_upload_mb=max_upload_mb, model="tiny test model"
    )
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    host, port = http.server_address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        http.shutdown()
        http.server_close()
        service.close()
