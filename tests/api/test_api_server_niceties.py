"""Server niceties: the interactive docs work without internet, and /metrics has what a
Prometheus operator expects (process and Python collectors, build info, a ``code`` label)."""

from __future__ import annotations

import re

from connguard import __version__


def test_docs_page_loads_only_from_this_server(actors):
    client = actors.anonymous.client
    r = client.get("/docs")
    assert r.status_code == 200, r.status_code
    refs = re.findall(r'(?:src|href)="([^"]+)"', r.text) + re.findall(r"url: '([^']+)'", r.text)
    assert len(refs) >= 4, f"expected the page to reference its script, style, icon and document: {refs}"
    foreign = [u for u in refs if re.match(r"^(https?:)?//", u)]
    assert foreign == [], f"/docs loads from other hosts: {foreign}"
    for ref in refs:
        asset = client.get(ref)
        assert asset.status_code == 200, f"{ref}: {asset.status_code}"
    bundle = client.get("/docs/static/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith(("application/javascript", "text/javascript")), bundle.headers
    assert len(bundle.content) > 500_000, f"swagger-ui-bundle.js is {len(bundle.content)} bytes"
    # FastAPI writes OpenAPI 3.1, which Swagger UI renders from version 5 on
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    versions = set(re.findall(rb'"(5\.\d+\.\d+)"', bundle.content))
    assert versions, "the bundled Swagger UI is not a 5.x release"
    assert client.get("/redoc").status_code == 404  # ReDoc's page would load from a CDN


def test_metrics_have_collectors_build_info_and_code_label(actors):
    actors.member_a.get("qos/policies")
    actors.anonymous.get("qos/policies")
    text = actors.member_a.client.get("/metrics").text
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    for expected in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                     "python_info", "python_gc_objects_collected_total"):
        assert expected in names, f"{expected} missing from /metrics ({len(names)} names)"
    assert f'connguard_build_info{{version="{__version__}"}} 1.0' in text
    assert 'connguard_api_requests_total{code="200",method="GET",route="/v2.0/qos/policies"}' in text
    assert 'connguard_api_requests_total{code="401",method="GET",route="/v2.0/qos/policies"}' in text
    assert 'status="' not in text.split("connguard_api_requests_total", 1)[1].split("\n# ", 1)[0]
