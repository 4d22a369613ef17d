"""Webhooks: the signature a receiver checks, which URLs may receive, one delivery attempt.

A delivery is a JSON POST with ``Docindex-Signature: t=<unix seconds>,v1=<hex>``, where the
hex is HMAC-SHA256 with the webhook's secret over ``<t>.<body>``: the receiver recomputes
it over the raw body, compares in constant time and refuses old timestamps (replays).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

SIGNATURE_HEADER = "Docindex-Signature"
# Receivers deduplicate on it: a delivery whose answer was lost is sent again.
DELIVERY_HEADER = "Docindex-Delivery"
EVENT_HEADER = "Docindex-Event"


class RefusedUrl(ValueError):
    """A URL webhooks must not be sent to."""


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, tolerance_s: float = 300.0) -> bool:
    """What a receiver does: the signature matches and its timestamp is recent."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse what is not http(s), and (unless allowed) hosts that are private by their
    name or address. Names are resolved again at each delivery (``resolve_public``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedUrl("a webhook URL must be http:// or https:// with a host")
    if parts.username or parts.password:
        raise RefusedUrl("a webhook URL must not carry credentials")
    if allow_private:
        return
    host = parts.hostname.rstrip(".").lower()
    if host == "localhost" or host.endswith((".localhost", ".internal", ".local")):
        raise RefusedUrl(f"{host} is a private host")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return  # a name: checked when it is resolved
    if not _public(address):
        raise RefusedUrl(f"{host} is not a public address")


async def resolve_public(url: str, *, allow_private: bool) -> None:
    """Before each attempt: every address the host resolves to must be public, so a name
    that points (or was re-pointed) at the internal network is refused (SSRF)."""
    check_url(url, allow_private=allow_private)
    if allow_private:
        return
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port)
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if not _public(address):
            raise RefusedUrl(f"{parts.hostname} resolves to {address}, not a public address")


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def body_of(delivery_id: str, event_type: str, created_at: datetime, data: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "id": delivery_id,
            "type": event_type,
            "created_at": created_at.isoformat(),
            "data": data,
        },
        separators=(",", ":"),
    ).encode()


@dataclass(frozen=True)
class Answer:
    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def post(
    url: str,
    secret: str,
    body: bytes,
    *,
    delivery_id: str,
    event_type: str,
    timeout_s: float,
    allow_private: bool,
) -> Answer:
    """One attempt: sign now (the timestamp is the attempt's), POST, do not follow
    redirects (a redirect could lead anywhere, the internal network included)."""
    try:
        await resolve_public(url, allow_private=allow_private)
    except (RefusedUrl, OSError) as exc:
        return Answer(None, str(exc) or type(exc).__name__)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "docindex-webhooks",
        SIGNATURE_HEADER: sign(secret, body, int(time.time())),
        DELIVERY_HEADER: delivery_id,
        EVENT_HEADER: event_type,
    }
    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as http:
            response = await http.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return Answer(None, f"{type(exc).__name__}: {exc}"[:500])
    if 200 <= response.status_code < 300:
        return Answer(response.status_code, None)
    return Answer(response.status_code, f"HTTP {response.status_code}: {response.text[:200]}")
