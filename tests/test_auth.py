"""Who gets in: trusted networks without a token, everyone else with it; a forwarded address only from the proxy."""
from __future__ import annotations

import http.client
import json
import logging
import socket
import stat

import psutil

import pytest

from config import ConfigError, load_config

TOKEN = "executor-token-5b1e"
# A UI user's login token, as the backend's MLOps proxy forwards it (ICIPMlOpsRestAdapterService
# copies every header of the UI's request).
USER_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkZW1vQGVzc2VkdW0ifQ.c2lnbmF0dXJlLW9mLXRoZS11aQ"


@pytest.mark.parametrize("settings", [
    {"host": "0.0.0.0"},
    {"host": "10.1.2.3", "trusted_networks": ""},
])
def test_a_non_loopback_bind_needs_a_token_or_trusted_networks(tmp_path, settings):
    with pytest.raises(ConfigError, match="EXECUTOR_TRUSTED_NETWORKS"):
        load_config({}, {"data_dir": str(tmp_path), **settings})


@pytest.mark.parametrize("settings", [{"api_token": TOKEN}, {"trusted_networks": "10.20.0.0/16"}])
def test_a_non_loopback_bind_starts_with_either(tmp_path, settings):
    assert load_config({}, {"data_dir": str(tmp_path), "host": "0.0.0.0", **settings}).host == "0.0.0.0"


@pytest.mark.parametrize("value, message", [
    ("0.0.0.0/0", "trusts every address"),
    ("::/0", "trusts every address"),
    ("10.0.0.0/33", "not an address or CIDR"),
    ("backend.example", "not an address or CIDR"),
])
def test_bad_trusted_networks_are_refused_at_start_up(tmp_path, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config({}, {"data_dir": str(tmp_path), "trusted_networks": value})


def test_the_trusted_proxy_must_be_an_address(tmp_path):
    with pytest.raises(ConfigError, match="EXECUTOR_TRUSTED_PROXY"):
        load_config({}, {"data_dir": str(tmp_path), "trusted_proxy": "proxy.local"})


def test_a_trusted_client_needs_no_token_and_others_do(make_app):
    client = make_app(api_token=TOKEN, trusted_networks="10.20.0.0/16, 127.0.0.0/8").test_client()
    assert client.get("/execute", environ_base={"REMOTE_ADDR": "10.20.3.4"}).status_code == 200
    assert client.get("/execute", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    # An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
    assert client.get("/execute", environ_base={"REMOTE_ADDR": "::ffff:10.20.3.4"}).status_code == 200
    outsider = {"REMOTE_ADDR": "192.0.2.7"}
    refused = client.get("/execute", environ_base=outsider)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/execute", environ_base=outsider,
                      headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_a_users_jwt_is_never_taken_for_the_token_nor_logged(make_app, caplog):
    client = make_app(api_token=TOKEN, trusted_networks="10.20.0.0/16").test_client()
    caplog.set_level(logging.DEBUG)
    answer = client.get("/api/service/v1/models/list?adapter_instance=aws1&project=Demo",
                        environ_base={"REMOTE_ADDR": "192.0.2.7"},
                        headers={"Authorization": f"Bearer {USER_JWT}", "Cookie": f"token={USER_JWT}"})
    assert answer.status_code == 401
    assert USER_JWT not in answer.get_data(as_text=True)
    assert USER_JWT not in caplog.text and "192.0.2.7" in caplog.text
    # From the backend's network the same forwarded header does no harm: the address admits it.
    trusted = client.get("/api/service/v1/models/list?adapter_instance=aws1&project=Demo",
                         environ_base={"REMOTE_ADDR": "10.20.0.9"}, headers={"Authorization": f"Bearer {USER_JWT}"})
    assert trusted.status_code == 200 and trusted.get_json() == []
    assert USER_JWT not in caplog.text


def test_without_a_token_an_untrusted_client_is_forbidden(make_app):
    client = make_app(trusted_networks="10.20.0.0/16").test_client()
    refused = client.get("/execute", environ_base={"REMOTE_ADDR": "192.0.2.7"},
                         headers={"Authorization": "Bearer anything"})
    assert refused.status_code == 403 and "EXECUTOR_TRUSTED_NETWORKS" in refused.get_json()["error"]
    assert client.get("/health", environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 200


class UnixConnection(http.client.HTTPConnection):
    """An HTTP connection over a Unix socket, as nginx's `proxy_pass http://unix:/path:` opens one."""

    def __init__(self, path: str):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def _get(connection: http.client.HTTPConnection, headers: dict[str, str]) -> int:
    try:
        connection.request("GET", "/execute", headers=headers)
        response = connection.getresponse()
        json.loads(response.read())
        return response.status
    finally:
        connection.close()


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets here")
def test_a_forwarded_address_counts_only_on_the_proxys_unix_socket(service, tmp_path):
    proxy_socket = tmp_path / "run" / "executor.sock"
    proxy_socket.parent.mkdir()
    proc = service(tmp_path / "data", env={"EXECUTOR_API_TOKEN": TOKEN, "EXECUTOR_TRUSTED_NETWORKS": "10.20.0.0/16",
                                           "EXECUTOR_TRUSTED_PROXY": str(proxy_socket)})
    port = int(proc.url.rsplit(":", 1)[1])
    assert stat.S_IMODE(proxy_socket.stat().st_mode) == 0o660
    backend_via_proxy = {"X-Forwarded-For": "10.20.0.9"}
    assert _get(UnixConnection(str(proxy_socket)), backend_via_proxy) == 200
    assert _get(UnixConnection(str(proxy_socket)), {"X-Forwarded-For": "192.0.2.7"}) == 401
    # Without the header, a connection on the socket is nobody in particular: it needs the token.
    assert _get(UnixConnection(str(proxy_socket)), {}) == 401
    # The same header over TCP, even from loopback, is dropped.
    assert _get(http.client.HTTPConnection("127.0.0.1", port, timeout=30), backend_via_proxy) == 401
    assert _get(UnixConnection(str(proxy_socket)), {**backend_via_proxy, "Authorization": f"Bearer {USER_JWT}"}) == 200
    assert proc.terminate() == 0
    assert USER_JWT not in "".join(proc.lines)
    assert not proxy_socket.exists()


@pytest.mark.parametrize("proxy", ["127.0.0.1", "127.0.0.2", "::1"])
def test_a_loopback_proxy_is_refused_pointing_to_the_socket(tmp_path, proxy):
    with pytest.raises(ConfigError, match="EXECUTOR_TRUSTED_PROXY: .*Unix socket"):
        load_config({}, {"data_dir": str(tmp_path), "api_token": TOKEN, "trusted_proxy": proxy})


def test_a_proxy_at_an_address_of_this_host_is_refused(tmp_path):
    own = next((address.address for addresses in psutil.net_if_addrs().values() for address in addresses
                if address.family == socket.AF_INET and not address.address.startswith("127.")), None)
    if own is None:
        pytest.skip("this host has no address besides loopback")
    with pytest.raises(ConfigError, match=f"EXECUTOR_TRUSTED_PROXY: {own} is an address of this host.*Unix socket"):
        load_config({}, {"data_dir": str(tmp_path), "api_token": TOKEN, "trusted_proxy": own})


def test_a_proxy_elsewhere_is_taken_with_a_token(tmp_path):
    # 198.51.100.0/24 is a documentation network: an address no host here owns.
    settings = {"data_dir": str(tmp_path), "trusted_proxy": "198.51.100.77"}
    with pytest.raises(ConfigError, match="EXECUTOR_API_TOKEN"):
        load_config({}, settings)
    assert load_config({}, {**settings, "api_token": TOKEN}).trusted_proxy == "198.51.100.77"


def test_where_jobs_share_the_hosts_network_ready_says_a_job_could_call_as_loopback(make_app):
    # EXECUTOR_SANDBOX=off stands for Windows and hosts without bubblewrap: jobs in the host's network.
    unisolated = make_app(sandbox="off").test_client().get("/ready").get_json()["checks"]["sandbox"]
    assert "a job can call this API as a trusted client" in unisolated["reason"]
    loopback_trusted = make_app(sandbox="off", api_token=TOKEN, trusted_networks="127.0.0.0/8").test_client()
    assert "EXECUTOR_TRUSTED_NETWORKS" in loopback_trusted.get("/ready", headers={
        "Authorization": f"Bearer {TOKEN}"}).get_json()["checks"]["sandbox"]["reason"]
    with_token = make_app(sandbox="off", api_token=TOKEN).test_client()
    assert with_token.get("/ready", headers={"Authorization": f"Bearer {TOKEN}"}).get_json()[
        "checks"]["sandbox"]["reason"] is None
