"""Who may call the executor: clients of the trusted networks, and everyone else with the API token.

The Essedum backend's job calls (POST /execute, getStatus, getLog, stop, getOutputArtifacts) are
plain okhttp requests with only an `accept` header (ICIPRemoteExecutorJob), so the backend is
admitted by its address. Its MLOps calls forward the UI user's headers, JWT in `Authorization`
included (ICIPMlOpsRestAdapterService): that header is compared with our token and nothing else,
and neither it nor any other header is ever logged.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Any, Iterable

from flask import current_app, jsonify, request

logger = logging.getLogger(__name__)


def client_address() -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Return the client's address: the TCP peer, or what the configured proxy forwarded.

    waitress rewrites REMOTE_ADDR from X-Forwarded-For only when the peer is EXECUTOR_TRUSTED_PROXY
    and strips the header from anyone else, so REMOTE_ADDR is the one address to believe.
    """
    try:
        return ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return None


def is_trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
               networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """True when the address lies in one of the trusted networks."""
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address.version == network.version and address in network for network in networks)


def loopback_trust_risk(config: Any, sandbox: Any) -> str | None:
    """Say how a job could call this API as a trusted client, or None when none can."""
    if sandbox is None or sandbox.isolating:
        # Each job has a network namespace of its own: the host's loopback is out of its reach.
        return None
    loopback = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
    open_to_all = not config.api_token and not config.trusted_networks
    if not open_to_all and not any(is_trusted(address, config.trusted_networks) for address in loopback):
        return None
    return ("user code is not isolated and shares this host's network, where loopback needs no token: a job can "
            "call this API as a trusted client; set EXECUTOR_API_TOKEN and keep loopback out of "
            "EXECUTOR_TRUSTED_NETWORKS")


def bearer_matches(header: str, token: str) -> bool:
    """True when an Authorization header carries exactly this bearer token."""
    scheme, _, supplied = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(supplied.strip().encode(), token.encode())


def authenticate(view_is_public: bool) -> Any:
    """Admit the request, or return the 401/403 answer that refuses it."""
    config = current_app.config["EXECUTOR"].config
    token, networks = config.api_token, config.trusted_networks
    if view_is_public or (not token and not networks):
        # Neither set: the start-up check allows only a loopback bind.
        return None
    address = client_address()
    if is_trusted(address, networks):
        return None
    if token and bearer_matches(request.headers.get("Authorization", ""), token):
        return None
    # The address is ours to log; the header (a user's JWT, or a wrong token) never is.
    logger.info("refused %s %s from %s: not a trusted network and no valid token", request.method, request.path,
                address)
    if not token:
        response = jsonify(error=f"forbidden: {address} is not in EXECUTOR_TRUSTED_NETWORKS")
        response.status_code = 403
        return response
    response = jsonify(error="authentication required: send 'Authorization: Bearer <token>' "
                             "(the executor's API token; a user's login token is not it)")
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="executor"'
    return response
