"""Which hosts and addresses the server may download audio from.

The server fetches whatever URL a client names, from inside the customer's network. Cloud
metadata services (169.254.169.254, fd00:ec2::254) hand out credentials to anything that asks
from the host, so link-local addresses are refused by default. Private ranges stay allowed:
customers serve audio from internal CDNs. Operators can narrow this with DOWNLOAD_ALLOW (only
these) and widen or tighten it with DOWNLOAD_DENY; deny wins.

The check runs on the address a connection actually reached (see daemon/jobs/download.py), for every
redirect hop, so a DNS answer that changes between a check and the connect cannot slip past it.

An IPv6 address can carry an IPv4 address by a standard mapping (IPv4-mapped and -compatible,
SIIT's IPv4-translated, NAT64's 64:ff9b::/96 and 64:ff9b:1::/48, 6to4, Teredo, ISATAP); a host that
translates such packets delivers them to that IPv4 address. So each embedded IPv4 address counts as
the address itself: a rule that matches any of them matches the connection.
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
        ip = ipaddress.ip_address(address.split("%")[0])
        forms = [ip, *embedded_ipv4(ip)] if isinstance(ip, ipaddress.IPv6Address) else [ip]
        shown = f"{ip}" if len(forms) == 1 else f"{ip}, which carries {', '.join(map(str, forms[1:]))}"
        for form in forms:
            denied = self.deny.match(host, form)
            if denied is not None:
                return f"{host} ({shown}) is in DOWNLOAD_DENY ({denied})"
        if not self.allow.empty and all(self.allow.match(host, form) is None for form in forms):
            return f"{host} ({shown}) is not in DOWNLOAD_ALLOW"
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


_LAST_32 = (1 << 32) - 1
_COMPATIBLE = ipaddress.ip_network("::/96")  # ::a.b.c.d (RFC 4291, deprecated); not :: or ::1
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # ::ffff:0:a.b.c.d (SIIT, RFC 2765)
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: operators pick a prefix of /48 to /96 in it
_ISATAP_IDS = (0x00005EFE, 0x02005EFE)  # interface identifier ::[02]00:5efe:a.b.c.d (RFC 5214)


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address that `address` carries by a standard mapping, in no particular order."""
    value = int(address)
    found: list[int] = []
    if address.ipv4_mapped is not None:
        found.append(int(address.ipv4_mapped))
    if address in _TRANSLATED or address in _NAT64_WELL_KNOWN or (address in _COMPATIBLE and value > 1):
        found.append(value & _LAST_32)
    if address in _NAT64_LOCAL:
        found += [_rfc6052(value, length) for length in (48, 56, 64, 96)]
    if address.sixtofour is not None:
        found.append(int(address.sixtofour))
    if address.teredo is not None:
        found += [int(part) for part in address.teredo]
    if (value >> 32) & _LAST_32 in _ISATAP_IDS:
        found.append(value & _LAST_32)
    return [ipaddress.IPv4Address(v) for v in dict.fromkeys(found)]


def _rfc6052(value: int, prefix_length: int) -> int:
    """The IPv4 address after a NAT64 prefix of this length (RFC 6052 section 2.2: bits 64-71 are skipped)."""
    bits = format(value, "0128b")
    return int("".join(bits[i] for i in range(prefix_length, 128) if not 64 <= i < 72)[:32], 2)
