"""docker/compose.yaml agrees with the tested deployment scripts (no Docker engine needed).

The scripts in deploy/ and :mod:`harness.deployment` (tests/harness) are exercised by real runs
(tests/test_deployment.py); these tests make sure the compose file starts the same components with the
same port, TLS / authentication flags, node-config keys and Flower / torch versions.
"""

from __future__ import annotations

import re
from pathlib import Path

import flwr
import pytest
import torch
import yaml
from harness.deployment import LocalDeployment

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
INSTITUTIONS = sorted(name.removeprefix("supernode-") for name in SERVICES if name.startswith("supernode-"))
SUPERLINK_TLS = ["--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile", "--enable-supernode-auth"]
SUPERNODE_TLS = ["--root-certificates", "--auth-supernode-private-key"]


def script(name: str) -> str:
    return (ROOT / "deploy" / name).read_text()


def flags(service: str) -> dict[str, str]:
    """``--key=value`` / ``--key`` items of a service's command as a dict."""
    out = {}
    for item in SERVICES[service]["command"]:
        key, _, value = item.partition("=")
        out[key] = value
    return out


def node_config(text: str) -> dict[str, str]:
    return dict(re.findall(r'([\w-]+)=\\?"([^"\\]*)\\?"', text))


def mounts(service: str) -> dict[str, str]:
    """container path -> 'host:container[:ro]' for a service's volumes."""
    out = {}
    for v in SERVICES[service].get("volumes", []):
        path = v.removesuffix(":ro")
        out[path.rsplit(":", 1)[1]] = v  # the host part may hold ${VAR:-default}
    return out


@pytest.fixture
def default_port() -> int:
    return int(re.search(r"UML_FED_SUPERLINK_PORT:-(\d+)", script("common.sh")).group(1))


@pytest.fixture
def fleet_port() -> int:
    return int(re.search(r"UML_FED_FLEET_PORT:-(\d+)", script("common.sh")).group(1))


def test_two_institutions_each_with_a_supernode_and_a_clientapp():
    assert INSTITUTIONS == ["s1", "s2"]
    assert {"superlink", "fleet-proxy", "serverapp", "register"} | {
        f"{k}-{m}" for m in INSTITUTIONS for k in ("supernode", "clientapp")
    } == set(SERVICES)


def test_superlink_port_and_flags_match_the_script_and_the_launcher(default_port, tmp_path):
    sl = flags("superlink")
    assert sl["--port"] == str(default_port)
    assert SERVICES["superlink"]["ports"] == [f"127.0.0.1:{default_port}:{default_port}"]  # the operator's only
    launcher = LocalDeployment(tmp_path).superlink_command()
    for flag in [*SUPERLINK_TLS, "--disable-runtime-dependency-installation"]:
        assert flag in sl and flag in script("start-superlink.sh") and flag in launcher, flag
    assert "--insecure" not in sl
    for flag, name in zip(SUPERLINK_TLS[:3], ("ca.crt", "server.pem", "server.key")):
        assert Path(sl[flag]).name == name and sl[flag] in mounts("superlink")


def test_supernodes_connect_with_tls_and_their_own_key_and_the_script_node_config(default_port, fleet_port, tmp_path):
    built = [
        line
        for line in script("start-supernode.sh").splitlines()
        if re.match(r"\s*(\[\[.*\]\] \|\| )?node_config\+?=", line)
    ]
    script_keys = {k for line in built for k in re.findall(r'([\w-]+)=\\"', line)}
    launcher = LocalDeployment(tmp_path)
    launcher.port = default_port
    for m in INSTITUTIONS:
        sn = flags(f"supernode-{m}")
        assert sn["--superlink"] == f"fleet-proxy:{fleet_port}" and "--insecure" not in sn
        for flag in SUPERNODE_TLS:
            assert flag in sn and flag in script("start-supernode.sh") and flag in launcher.supernode_command(m, m)
        assert Path(sn["--auth-supernode-private-key"]).name == f"supernode-{m}"
        cfg = node_config(sn["--node-config"])
        assert set(cfg) == script_keys == {"institution", "output-dir", "data-path"}
        assert cfg["institution"] == m and cfg["output-dir"].startswith("/") and cfg["data-path"].startswith("/")
        # the ClientApp (process isolation) reaches this SuperNode and holds the data, read-only
        app = flags(f"clientapp-{m}")
        assert app["--runtime-api-address"] == f"supernode-{m}:{sn['--port']}" and sn["--host"] == "0.0.0.0"
        assert mounts(f"clientapp-{m}")[cfg["data-path"]].endswith(":ro")
        assert not mounts(f"clientapp-{m}")[cfg["output-dir"]].endswith(":ro")


def test_private_keys_are_mounted_only_where_they_belong():
    for service in SERVICES:
        for volume in SERVICES[service].get("volumes", []):
            host = volume.removesuffix(":ro").rsplit(":", 1)[0]
            if host.endswith("server.key"):
                assert service in ("superlink", "fleet-proxy")
            m = re.search(r"supernode-(\w+)$", host)
            if m:
                assert service == f"supernode-{m.group(1)}", f"{host} mounted into {service}"
    registered = {Path(v.removesuffix(":ro").rsplit(":", 1)[0]).name for v in SERVICES["register"]["volumes"]}
    assert {f"supernode-{m}.pub" for m in INSTITUTIONS} <= registered


def test_images_match_the_project_flower_and_torch_versions():
    dockerfiles = (ROOT / "docker").glob("*.Dockerfile")
    froms = {f.name: re.search(r"^FROM (\S+)", f.read_text(), re.MULTILINE).group(1) for f in dockerfiles}
    assert froms == {
        "superlink.Dockerfile": f"flwr/superlink:{flwr.__version__}",
        "supernode.Dockerfile": f"flwr/supernode:{flwr.__version__}",
        "app.Dockerfile": f"flwr/superexec:{flwr.__version__}",
    }
    assert f'"torch=={torch.__version__.split("+")[0]}"' in (ROOT / "docker" / "app.Dockerfile").read_text()
    assert SERVICES["fleet-proxy"]["image"].startswith("nginx:")  # the official image, configured by template
    for service in (s for s in SERVICES.values() if "build" in s):
        dockerfile = service["build"]["dockerfile"]
        assert (ROOT / "docker" / service["build"]["context"] / dockerfile).resolve().is_file()


def test_server_certificate_is_valid_for_the_compose_service_names():
    assert "DNS:superlink" in script("make-certs.sh") and "DNS:fleet-proxy" in script("make-certs.sh")


def test_only_the_fleet_proxy_bridges_the_institutions_to_the_superlink(fleet_port):
    """The SuperNodes share no network with the SuperLink; the proxy renders the tested template."""
    nets = {name: set(svc.get("networks", [])) for name, svc in SERVICES.items()}
    assert nets["superlink"] == {"link"} and nets["fleet-proxy"] == {"link", "fleet"}
    for m in INSTITUTIONS:
        assert "link" not in nets[f"supernode-{m}"] and nets[f"clientapp-{m}"] == {m}
    proxy = SERVICES["fleet-proxy"]
    assert proxy["ports"] == [f"{fleet_port}:{fleet_port}"] and proxy["environment"]["FLEET_LISTEN"].endswith(
        str(fleet_port)
    )
    template = "../deploy/fleet-proxy.conf.template"
    assert any(v.startswith(f"{template}:/etc/nginx/templates/") for v in proxy["volumes"])
    assert (ROOT / "deploy" / "fleet-proxy.conf.template").is_file()
