"""The served app freezes its start-up heap once it has started (gateway.server.served)."""

from __future__ import annotations

import gc

from litestar.testing import TestClient

from gateway.app import create_app
from gateway.server import freeze_startup_heap, served
from gateway.settings import load_settings


def test_the_served_app_freezes_what_start_up_built_and_nothing_before() -> None:
    app = served(create_app(load_settings(overrides={"upstream": {"url": "http://127.0.0.1:9/v1"}})))
    assert app.on_startup[-1] is freeze_startup_heap  # the last hook: after the pipeline has started
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        with TestClient(app) as client:
            assert gc.get_freeze_count() > 10_000  # the app, its libraries and its models
            assert client.get("/healthz").status_code == 200
    finally:
        gc.unfreeze()  # this test process builds many apps: their cycles must stay collectable
