"""Who gets in: trusted networks without a token, everyone else with it; a forwarded address only from the proxy."""
from __future__ import annotations

import http.client
import json
import logging

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


def _get(port: int, source: str, headers: dict[str, str]) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        connection.request("GET", "/execute", headers=headers)
        response = connection.getresponse()
        json.loads(response.read())
        return response.status
    finally:
        connection.close()


def test_a_forwarded_address_counts_only_from_the_configured_proxy(service, tmp_path):
    # The proxy is 127.0.0.2: a second loopback address, so this test can connect as the proxy and
    # as someone else (127.0.0.1) to the same real service.
    proc = service(tmp_path / "data", env={"EXECUTOR_API_TOKEN": TOKEN, "EXECUTOR_TRUSTED_NETWORKS": "10.20.0.0/16",
                                           "EXECUTOR_TRUSTED_PROXY": "127.0.0.2"})
    port = int(proc.url.rsplit(":", 1)[1])
    backend_via_proxy = {"X-Forwarded-For": "10.20.0.9"}
    assert _get(port, "127.0.0.2", backend_via_proxy) == 200
    assert _get(port, "127.0.0.2", {"X-Forwarded-For": "192.0.2.7"}) == 401
    # The same header straight from a client that is not the proxy is ignored.
    assert _get(port, "127.0.0.1", backend_via_proxy) == 401
    assert _get(port, "127.0.0.2", {**backend_via_proxy, "Authorization": f"Bearer {USER_JWT}"}) == 200
    assert proc.terminate() == 0
    assert USER_JWT not in "".join(proc.lines)
