"""The region catalog: which source addresses a cloud service connects from, per region.

Shipped with the package (`netfwd/data/regions.yaml`, also reachable as `rules/regions.yaml`);
a newer copy can be passed with `--catalog FILE`. Anomalies in the vendor's table (the same CIDR
under two regions, RFC 1918 blocks) are computed, never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from netaddr import IPAddress, IPNetwork, IPSet, cidr_merge

from netfwd.errors import InputError, visible
from netfwd.model import NAME_RE
from netfwd.yamlsource import Located, load_file

RFC1918 = IPSet(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"])
SHARED_SPACE = IPSet(["100.64.0.0/10"])  # RFC 6598 carrier-grade NAT space


@dataclass(frozen=True, slots=True)
class Region:
    id: str
    name: str
    public: tuple[IPAddress, ...]
    private: tuple[IPNetwork, ...]
    vpc: bool  # may a VPC-mode cluster be in this region?

    @property
    def networks(self) -> tuple[IPNetwork, ...]:
        """Every source of the region as CIDRs (public IPs as /32), minimal and sorted."""
        return tuple(cidr_merge([IPNetwork(f"{ip}/32") for ip in self.public] + list(self.private)))


@dataclass(frozen=True, slots=True)
class Anomaly:
    code: str  # catalog-duplicate | private-range | shared-space
    cidr: IPNetwork
    regions: tuple[str, ...]
    note: str


@dataclass(frozen=True, slots=True)
class Catalog:
    regions: tuple[Region, ...]
    source: str
    source_updated: str
    retrieved: str
    file: str
    digest: str = ""  # sha256 of the catalog text

    @property
    def identity(self) -> str:
        """What a script header names: the table's date and the exact bytes used."""
        return f"source updated {self.source_updated or 'unknown'} sha256:{self.digest or 'none'}"

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(region.id for region in self.regions)

    def region(self, region_id: str) -> Region:
        for region in self.regions:
            if region.id == region_id:
                return region
        raise KeyError(region_id)

    def networks(self, region_ids) -> IPSet:
        return IPSet(net for rid in region_ids for net in self.region(rid).networks)

    def anomalies(self) -> tuple[Anomaly, ...]:
        found: list[Anomaly] = []
        owners: dict[IPNetwork, list[str]] = {}
        for region in self.regions:
            for net in region.private:
                owners.setdefault(net, []).append(region.id)
        for net, regions in owners.items():
            if len(regions) > 1:
                found.append(Anomaly("catalog-duplicate", net, tuple(regions),
                                     f"{net} is listed for {', '.join(regions)}"))
            if IPSet([net]) & RFC1918:
                found.append(Anomaly("private-range", net, tuple(regions),
                                     f"{net} is an RFC 1918 block: whitelisting it may admit on-prem hosts"))
            elif IPSet([net]).issubset(SHARED_SPACE):
                found.append(Anomaly("shared-space", net, tuple(regions),
                                     f"{net} is RFC 6598 shared address space (reached over the provider's network)"))
        return tuple(found)


def _default_path() -> Path:
    return Path(str(resources.files("netfwd") / "data" / "regions.yaml"))


@lru_cache(maxsize=8)
def load_catalog(path: str | None = None) -> Catalog:
    """Load and validate a catalog file (the bundled one by default)."""
    doc = load_file(path or _default_path())
    return parse_catalog(doc)


def parse_catalog(doc: Located) -> Catalog:
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error("", "a catalog must be a mapping with a 'regions' list")
    if data.get("version", 1) != 1:
        raise doc.error("version", f"{data.get('version')!r} is not a supported catalog version (1)")
    rows = data.get("regions")
    if not isinstance(rows, list) or not rows:
        raise doc.error("regions", "must be a non-empty list")
    regions: list[Region] = []
    seen: set[str] = set()
    for index, row in enumerate(rows):
        where = f"regions[{index}]"
        if not isinstance(row, dict):
            raise doc.error(where, "must be a mapping")
        rid = row.get("id")
        if not isinstance(rid, str) or not NAME_RE.match(rid):
            raise doc.error(f"{where}.id", f"{rid!r} is not a valid region id")
        if rid in seen:
            raise doc.error(f"{where}.id", f"{rid!r} appears twice")
        seen.add(rid)
        public = tuple(_address(doc, f"{where}.public[{i}]", v) for i, v in enumerate(_list(doc, row, where, "public")))
        private = tuple(_network(doc, f"{where}.private[{i}]", v) for i, v in enumerate(_list(doc, row, where, "private")))
        name = row.get("name", rid)
        if not isinstance(name, str) or visible(name) != name:  # no newline, ESC, NEL, bidi override, ...
            raise doc.error(f"{where}.name", "must be a single line of visible characters")
        vpc = row.get("vpc", False)
        if not isinstance(vpc, bool):  # bool("false") is True
            raise doc.error(f"{where}.vpc", f"must be true or false, not {vpc!r}")
        regions.append(Region(rid, name, public, private, vpc))
    return Catalog(tuple(regions), str(data.get("source", "")), str(data.get("source_updated", "")),
                   str(data.get("retrieved", "")), doc.file, doc.digest)


def _list(doc: Located, row: dict, where: str, key: str) -> list:
    value = row.get(key, [])
    if not isinstance(value, list):
        raise doc.error(f"{where}.{key}", "must be a list")
    return value


def _address(doc: Located, where: str, value: object) -> IPAddress:
    try:
        if not _plain(value):
            raise ValueError(value)
        return IPAddress(str(value))
    except Exception:
        raise doc.error(where, f"{value!r} is not an IP address") from None


def _network(doc: Located, where: str, value: object) -> IPNetwork:
    try:
        if not _plain(value):
            raise ValueError(value)
        net = IPNetwork(str(value))
    except Exception:
        raise doc.error(where, f"{value!r} is not a CIDR") from None
    if net.ip != net.network:
        raise doc.error(where, f"{value} has host bits set (did you mean {net.cidr}?)")
    return net


def _plain(value: object) -> bool:
    """A string of printable ASCII: netaddr ignores a trailing newline and reads '/٢٤' as /24."""
    return isinstance(value, str) and value.isascii() and value.isprintable() and " " not in value


def unknown_region(region: str, catalog: Catalog) -> str:
    return f"unknown region {region!r}; known regions: {', '.join(catalog.ids)}"


__all__ = ["Anomaly", "Catalog", "InputError", "Region", "load_catalog", "parse_catalog", "unknown_region"]
