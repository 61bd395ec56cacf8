"""The Grafana dashboard and the Prometheus alerts name only series the server exports.

The exported names come from scraping a real server after calls that move every series (a
retry included), so a renamed metric breaks this test instead of an operator's dashboard.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
import yaml
from fake_provider import FakeProvider, Reply
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import settings_for
from tests.test_http import call_body, http_server

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SERIES = re.compile(r"\bexai_[a-z0-9_]+\b")

PANELS = (
    "Permit use per limit",
    "Waiting calls",
    "Request latency p50 / p95 / p99",
    "Duplicate-detection rate",
    "Cache hit rate",
    "Provider errors",
    "Retries by reason",
    "Breaker state",
    "Tokens per provider",
)


def dashboard_expressions() -> dict[str, list[str]]:
    board = json.loads((DEPLOY / "grafana" / "exai-mcp.json").read_text())
    panels: list[dict[str, Any]] = []
    for panel in board["panels"]:
        panels += [panel, *panel.get("panels", [])]  # rows may nest panels
    return {p["title"]: [t["expr"] for t in p.get("targets", [])] for p in panels}


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


async def exported_series(fake: FakeProvider, tmp_path: Path) -> set[str]:
    async with http_server(settings_for(fake, tmp_path)) as srv, srv.rest() as http:
        with anyio.fail_after(20):
            await http.post("/api/v1/execute", json=call_body("first"))
            await http.post("/api/v1/execute", json=call_body("first"))  # a cache hit
            fake.enqueue(Reply(status=500))
            await http.post("/api/v1/execute", json=call_body("retried"))
            text = (await http.get("/metrics")).text
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


async def test_every_dashboard_and_alert_expression_names_only_exported_series(
    fake: FakeProvider, tmp_path: Path
):
    exported = await exported_series(fake, tmp_path)
    expressions = [e for exprs in dashboard_expressions().values() for e in exprs]
    expressions += [rule["expr"] for rule in alert_rules()]
    assert expressions
    for expr in expressions:
        named = set(SERIES.findall(expr))
        assert named, f"names no exai series: {expr}"
        assert named <= exported, f"{sorted(named - exported)} not exported; in: {expr}"


def test_the_dashboard_has_the_panels_an_operator_needs():
    panels = dashboard_expressions()
    missing = [title for title in PANELS if title not in panels]
    assert not missing
    assert all(panels[title] for title in PANELS)


def test_the_alerts_cover_stuck_permits_open_breakers_latency_and_errors():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert {
        "ExaiPermitHeldPastDeadline",
        "ExaiBreakerOpen",
        "ExaiLatencyNearDeadline",
        "ExaiHighErrorRate",
    } <= set(rules)
    # Half-open after each cooldown: "never closed in 5 minutes", not "open for 5 minutes",
    # which a breaker that keeps failing never is.
    assert "min_over_time(exai_breaker_state[5m])" in rules["ExaiBreakerOpen"]["expr"]
    assert "0.2" in rules["ExaiHighErrorRate"]["expr"]
    for rule in rules.values():
        assert rule["annotations"]["summary"]


def test_counts_and_seconds_beside_rates_get_their_own_unit_and_axis():
    """256 cache entries on a percent axis read as 25600 %; a p95 wait in seconds beside a
    count of waiting calls reads as calls."""
    board = json.loads((DEPLOY / "grafana" / "exai-mcp.json").read_text())
    panels = {p["title"]: p for p in board["panels"]}
    expected = {"Cache hit rate": "short", "Calls by outcome": "short", "Waiting calls": "s"}
    for title, unit in expected.items():
        [override] = panels[title]["fieldConfig"]["overrides"]
        assert override["matcher"] == {"id": "byFrameRefID", "options": "B"}
        properties = {p["id"]: p["value"] for p in override["properties"]}
        assert properties == {"unit": unit, "custom.axisPlacement": "right"}, title
        assert properties["unit"] != panels[title]["fieldConfig"]["defaults"]["unit"]
