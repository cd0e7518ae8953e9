"""Which addresses a webhook may be sent to. A URL whose host resolves to a loopback,
private, link-local (cloud metadata: 169.254.169.254), shared, reserved or multicast
address is refused, unless its host is in WEBHOOK_ALLOWED_HOSTS.

The check is made on the addresses the request then connects to (the caller connects to
one of the addresses returned here, never resolves the name again), so a DNS answer
that changes between the check and the connection (DNS rebinding) cannot slip through."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Collection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddress(Exception):
    """The host resolves to an address webhooks may not reach."""


def is_public(address: IPAddress) -> bool:
    """True for a globally routable unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    return address.is_global and not address.is_multicast


async def resolve(host: str, port: int, allowed_hosts: Collection[str]) -> list[IPAddress]:
    """The addresses of `host` to connect to, all checked. BlockedAddress if any of them
    is not public and the host is not allowed (a name that resolves to a public and a
    private address is refused whole); OSError if it does not resolve."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if host.lower() in allowed_hosts:
        return addresses
    for address in addresses:
        if not is_public(address):
            raise BlockedAddress(
                f"{host} resolves to {address}, a loopback, private, link-local or "
                "reserved address: refused (add the host to WEBHOOK_ALLOWED_HOSTS to allow it)"
            )
    return addresses
