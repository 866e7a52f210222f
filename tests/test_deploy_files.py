"""Deployment files agree with the code: docker-compose, Grafana provisioning, Mosquitto config.

Docker is not available where the tests run, so these check the files' content rather than
starting the containers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from der_core import der_data as dd
from edge_gateway.stores import influx_protocol as lp
from edge_gateway.stores import influx_settings

ROOT = Path(__file__).resolve().parent.parent
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
DEV_TOKEN = "edge-gateway-dev-token"  # the spec's "Full Pipeline Example" token


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def datasource() -> dict:
    (source,) = yaml.safe_load((PROVISIONING / "datasources" / "influxdb.yml").read_text())["datasources"]
    return source


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads((PROVISIONING / "dashboards" / "der-site-overview.json").read_text())


def test_influxdb_service_matches_code_defaults(compose):
    service = compose["services"]["influxdb"]
    env = service["environment"]
    assert service["image"].startswith("influxdb:2.")
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    assert env["DOCKER_INFLUXDB_INIT_ORG"] == influx_settings.DEFAULT_INFLUX_ORG
    assert env["DOCKER_INFLUXDB_INIT_BUCKET"] == influx_settings.DEFAULT_INFLUX_BUCKET
    assert env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] == DEV_TOKEN
    assert env["DOCKER_INFLUXDB_INIT_RETENTION"] == f"{influx_settings.DEFAULT_RETENTION_DAYS}d"
    assert len(env["DOCKER_INFLUXDB_INIT_PASSWORD"]) >= 8  # the image's setup refuses shorter ones
    port = urlparse(influx_settings.DEFAULT_INFLUX_URL).port
    assert f"{port}:{port}" in service["ports"]
    named = {v.split(":")[0] for v in service["volumes"]}
    assert "influxdb-data" in named and named <= set(compose["volumes"])


def test_influxdb_starts_alone(compose):
    # `docker-compose up -d influxdb` (the spec) must not pull other services in.
    assert "depends_on" not in compose["services"]["influxdb"]


@pytest.mark.parametrize("service,port", [("mosquitto", 1883), ("grafana", 3000)])
def test_other_services_publish_their_ports(compose, service, port):
    assert f"{port}:{port}" in compose["services"][service]["ports"]


def test_bind_mounts_exist(compose):
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{source} is mounted but missing"


def test_mosquitto_conf_has_listener_and_persistence(compose):
    conf = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    directives = dict(line.split(None, 1) for line in conf.splitlines() if line.strip() and not line.startswith("#"))
    assert directives["listener"].split()[0] == "1883"
    assert directives["persistence"] == "true"
    data_mount = next(v for v in compose["services"]["mosquitto"]["volumes"] if v.startswith("mosquitto-data:"))
    assert directives["persistence_location"].rstrip("/") == data_mount.split(":")[1].rstrip("/")


def test_grafana_datasource_matches_influxdb_service(compose, datasource):
    env = compose["services"]["influxdb"]["environment"]
    assert datasource["type"] == "influxdb" and datasource["jsonData"]["version"] == "Flux"
    assert datasource["jsonData"]["organization"] == env["DOCKER_INFLUXDB_INIT_ORG"]
    assert datasource["jsonData"]["defaultBucket"] == env["DOCKER_INFLUXDB_INIT_BUCKET"]
    assert datasource["secureJsonData"]["token"] == env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert urlparse(datasource["url"]).hostname == "influxdb"
    assert urlparse(datasource["url"]).port == urlparse(influx_settings.DEFAULT_INFLUX_URL).port


def test_dashboard_provider_points_at_the_mounted_folder(compose):
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "dashboards.yml").read_text())["providers"]
    mount = next(v for v in compose["services"]["grafana"]["volumes"] if "provisioning" in v).split(":")[1]
    assert provider["options"]["path"] == f"{mount}/dashboards"


def _queries(dashboard: dict) -> list[str]:
    return [t["query"] for p in dashboard["panels"] for t in p["targets"]]


def test_dashboard_queries_use_real_columns(dashboard, datasource):
    queries = _queries(dashboard)
    fields = {f for q in queries for f in re.findall(r'r\._field == "([^"]+)"', q)}
    assert fields <= set(lp.FIELDS), f"unknown fields {fields - set(lp.FIELDS)}"
    for needed in (dd.SOLAR_KW, dd.LOAD_TOTAL, dd.BATTERY_POWER, dd.NET_GRID_FLOW, dd.BATTERY_SOC, dd.PRICE):
        assert needed in fields, f"dashboard does not show {needed}"
    for query in queries:
        assert f'r._measurement == "{lp.MEASUREMENT}"' in query
        assert f'r.{dd.DEVICE_ID} == "${{device}}"' in query
        assert f'from(bucket: "{influx_settings.DEFAULT_INFLUX_BUCKET}")' in query
    variable = dashboard["templating"]["list"][0]
    assert f'tag: "{dd.DEVICE_ID}"' in variable["query"]


def test_dashboard_panels_use_the_provisioned_datasource(dashboard, datasource):
    uids = {p["datasource"]["uid"] for p in dashboard["panels"]}
    uids |= {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {datasource["uid"]}
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


# A pointer to documentation, as the --help texts and deploy files write it: README or a page
# of docs/, then an optional quoted section title, possibly wrapped onto a comment's next line.
DOC_REFERENCE = re.compile(r'\((?:see )?(README|docs/[\w-]+\.md)(?:[,:]\s*"([^"]+)")?\)')
REFERENCING_FILES = sorted(ROOT.glob("run_*.py")) + sorted((ROOT / "deploy").glob("*.*")) + [ROOT / "docker-compose.yml"]


def _headings(page: Path) -> set[str]:
    return {line.lstrip("#").strip() for line in page.read_text().splitlines() if line.startswith("#")}


def _references(path: Path) -> list[tuple[str, str | None]]:
    # comment lines are joined so that a title wrapped after "# " still reads as one string
    text = re.sub(r"\n\s*#\s*", " ", path.read_text())
    return [(m.group(1), m.group(2)) for m in DOC_REFERENCE.finditer(text)]


def test_references_are_found():
    """The pattern sees each file's pointer: a test that finds none would pass for nothing."""
    found = {path.name for path in REFERENCING_FILES if _references(path)}
    assert {"run_cloud_sync.py", "run_portfolio.py", "edge-gateway.service", "docker-compose.yml"} <= found


@pytest.mark.parametrize("path", REFERENCING_FILES, ids=lambda path: path.name)
def test_documentation_pointers_name_sections_that_exist(path):
    """Each --help and deploy file sends its reader to a page and section that exist, since a
    pointer to a renamed section leaves the reader searching."""
    for page, section in _references(path):
        target = ROOT / ("README.md" if page == "README" else page)
        assert target.exists(), f"{path.name}: {page}"
        if section is not None:
            assert section in _headings(target), f"{path.name}: {page}, {section!r}"


def test_every_instruction_gives_the_gateway_env_file_to_root_alone():
    """The env file holds the broker's and InfluxDB's passwords; systemd reads it as root before
    the daemon drops to its user, so root alone needs it (0600), and the unit, the example and
    the install steps say the same."""
    said = {path.name: re.findall(r"chmod (0\d{3}) /etc/edge-gateway\.env|mode (0\d{3})", path.read_text())
            for path in (ROOT / "deploy" / "edge-gateway.service", ROOT / "deploy" / "edge-gateway.env.example",
                         ROOT / "docs" / "operations.md")}
    modes = {name: {mode for pair in found for mode in pair if mode} for name, found in said.items()}
    assert modes == {name: {"0600"} for name in said}
    owners = re.findall(r"chown (\S+) /etc/edge-gateway\.env", (ROOT / "docs" / "operations.md").read_text()
                        + (ROOT / "deploy" / "edge-gateway.env.example").read_text())
    assert owners and set(owners) == {"root:root"}

