"""The API-key rule of every network face (`kb serve`, `kb mcp --http`), without FastAPI.

- With server.api_key set, a request must send `Authorization: Bearer <key>`.
- With none set, a server listens only on a loopback address, unless the person starting it passes --no-key.

This module leaves out how a face reads the header (server/deps.py for FastAPI, server/mcp_server.py for MCP).
"""

from __future__ import annotations

import ipaddress
import secrets
import socket

WRONG_KEY = ("missing or wrong API key: send the header 'Authorization: Bearer <key>' with the key set in "
             "server.api_key (KB_SERVER__API_KEY)")


def key_matches(header: str | None, key: str) -> bool:
    """Whether an Authorization header value carries `key` as its Bearer token (always, when no key is set)."""
    if not key:
        return True
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        given = ""
    return secrets.compare_digest(given.strip().encode("utf-8"), key.encode("utf-8"))


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) reaches only this machine: 127.0.0.0/8, ::1 or localhost.
    0.0.0.0, :: and an empty host listen on every interface; a name counts only if all its addresses are loopback."""
    host = host.strip().strip("[]")
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def exposure_refusal(host: str, api_key: str, no_key: bool, command: str) -> str | None:
    """Why `command` must not listen on `host` (None when it may): a non-loopback address needs server.api_key,
    or --no-key from a person who means to serve every KB, uploads and deletes included, to the network."""
    if api_key or no_key or is_loopback(host):
        return None
    return (f"{command} will not listen on {host} without an API key: anyone who can reach this machine could "
            "read, change and delete your knowledge bases. Set server.api_key (KB_SERVER__API_KEY=<secret>, or "
            "server: {api_key: ...} in the config file) and clients send 'Authorization: Bearer <secret>'. "
            f"To serve without a key anyway, pass --no-key. On this machine only: --host 127.0.0.1.")
