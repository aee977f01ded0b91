"""Which hosts and addresses the server may download audio from.

The server fetches whatever URL a client names, from inside the customer's network. Cloud
metadata services (169.254.169.254, fd00:ec2::254) hand out credentials to anything that asks
from the host, so link-local addresses are refused by default. Private ranges stay allowed:
customers serve audio from internal CDNs. Operators can narrow this with DOWNLOAD_ALLOW (only
these) and widen or tighten it with DOWNLOAD_DENY; deny wins.

The check runs on the address a connection actually reached (see daemon/download.py), for every
redirect hop, so a DNS answer that changes between a check and the connect cannot slip past it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_DENY = "169.254.0.0/16,fe80::/10,fd00:ec2::254"


@dataclass(frozen=True)
class HostRules:
    """Networks and host names; a name starting with "." matches its subdomains too."""

    networks: tuple[IpNetwork, ...] = ()
    names: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.networks and not self.names

    def match(self, host: str, address: IpAddress) -> str | None:
        """The rule that matches the host name or its address, as written; None when none does."""
        host = host.lower().rstrip(".")
        for name in self.names:
            if host == name or (name.startswith(".") and (host.endswith(name) or host == name[1:])):
                return name
        for network in self.networks:
            if address.version == network.version and address in network:
                return str(network)
        return None


@dataclass(frozen=True)
class AddressPolicy:
    allow: HostRules  # empty: every host not denied
    deny: HostRules

    def refusal(self, host: str, address: str) -> str | None:
        """Why a connection to `host` at `address` must not be used, or None when it may."""
        ip = _plain(ipaddress.ip_address(address.split("%")[0]))
        denied = self.deny.match(host, ip)
        if denied is not None:
            return f"{host} ({ip}) is in DOWNLOAD_DENY ({denied})"
        if not self.allow.empty and self.allow.match(host, ip) is None:
            return f"{host} ({ip}) is not in DOWNLOAD_ALLOW"
        return None


def parse_rules(name: str, value: str) -> HostRules:
    """A comma-separated list of CIDR networks, addresses and host names ("none": empty).

    Raises ValueError naming the variable and the entry it cannot read.
    """
    networks: list[IpNetwork] = []
    names: list[str] = []
    if value.strip().lower() == "none":
        return HostRules()
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        label = entry.lower().rstrip(".")
        if not label.lstrip(".") or not all(c.isalnum() or c in ".-" for c in label):
            raise ValueError(f"{name}: {entry!r} is neither a network (10.0.0.0/8, fd00::1) nor a host name")
        names.append(label)
    return HostRules(tuple(networks), tuple(names))


def _plain(address: IpAddress) -> IpAddress:
    """An IPv4-mapped IPv6 address (::ffff:169.254.169.254) is the IPv4 address it maps."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
