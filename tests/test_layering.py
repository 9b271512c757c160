"""The layering of gateway/ (docs/architecture.md): nothing below the HTTP layer imports it, one module writes
request metrics, the savings formula lives in costs.py, and there is no import cycle."""

from __future__ import annotations

import inspect

from gateway.costs import CostModel
from tools.layering import (
    PACKAGE, api_importers, import_cycles, imports_of, modules, request_accountants, request_metric_writers,
)


def test_nothing_outside_the_http_layer_imports_it() -> None:
    assert api_importers() == []


def test_only_accounting_writes_request_metrics() -> None:
    assert request_metric_writers() == ["gateway/accounting.py"]
    assert request_accountants() == ["gateway/accounting.py"]


def test_the_savings_formula_is_in_costs() -> None:
    assert "max(0.0, upstream_price - cost)" in inspect.getsource(CostModel.charge)
    accounting = (inspect.getsourcefile(CostModel) or "").replace("costs.py", "accounting.py")
    assert "upstream_price" not in open(accounting, encoding="utf-8").read()


def test_the_task_helper_is_on_the_bottom_floor() -> None:
    """`gateway/tasks.py` (cancel_and_wait, used by the layers and learning) imports nothing of the gateway."""
    assert imports_of(PACKAGE / "tasks.py", set(modules())) == set()


def test_no_import_cycle_in_gateway() -> None:
    assert import_cycles() == []


def test_the_middle_runs_without_the_http_framework_or_the_model() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, gateway.build, gateway.pipeline, gateway.dispatch, gateway.cache, gateway.accounting, "
        "gateway.devtools.fake_backend; "
        "print(sorted(m for m in ('litestar', 'llama_cpp', 'gateway.api') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
