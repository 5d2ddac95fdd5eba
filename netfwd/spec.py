"""Turn a YAML spec into a validated :class:`netfwd.model.Spec`, with errors that name file, line and field.

The spec format (version 1) is documented in docs/spec.md and published as a JSON Schema
(`netfwd/data/spec.schema.json`). This module checks shapes and types, resolves `allow.regions`
through the catalog, and lets the model check the cross-field rules.
"""

from __future__ import annotations

import difflib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from netaddr import IPAddress, IPNetwork, cidr_merge

from netfwd.catalog import Catalog, load_catalog, unknown_region
from netfwd.errors import InputError, ModelError
from netfwd.model import Address, Allow, Endpoint, Forward, Network, Relay, Spec, check_port
from netfwd.yamlsource import Located, load_file, load_text

TOP_KEYS = ("version", "cluster", "relay", "forwards")
RELAY_KEYS = ("os", "interface", "address", "management_ports")
FORWARD_KEYS = ("name", "listen", "to", "protocol", "masquerade", "local", "allow")
LISTEN_KEYS = ("port", "address", "takeover")
TO_KEYS = ("address", "port")
ALLOW_KEYS = ("regions", "cidrs")
MAX_FORWARDS = 20_000
_KNOWN: dict[tuple[str, ...], frozenset[str]] = {keys: frozenset(keys) for keys in (TOP_KEYS, RELAY_KEYS, FORWARD_KEYS, LISTEN_KEYS, TO_KEYS, ALLOW_KEYS)}
_FORWARD_SET, _LISTEN_SET, _TO_SET = _KNOWN[FORWARD_KEYS], _KNOWN[LISTEN_KEYS], _KNOWN[TO_KEYS]
_FORWARD_REQUIRED, _TO_REQUIRED = ("name", "listen", "to"), ("address", "port")


def load_spec(path: str | Path, catalog: Catalog | None = None) -> Spec:
    """Read, parse and validate a spec file."""
    return build_spec(load_file(path), catalog)


def parse_spec(text: str, file: str = "<spec>", catalog: Catalog | None = None) -> Spec:
    """Validate spec text (for tests and for specs that do not come from a file)."""
    return build_spec(load_text(text, file), catalog)


def build_spec(doc: Located, catalog: Catalog | None = None) -> Spec:
    try:
        return _Builder(doc, catalog).spec()
    except ModelError as problem:
        raise doc.error(problem.field, problem.message) from None


@contextmanager
def at(prefix: str) -> Iterator[None]:
    """Prefix the field path of model errors raised inside, so they point into the document."""
    try:
        yield
    except ModelError as problem:
        field = f"{prefix}.{problem.field}" if problem.field else prefix
        raise ModelError(field, problem.message) from None


class _Builder:
    def __init__(self, doc: Located, catalog: Catalog | None) -> None:
        self.doc = doc
        self._catalog = catalog
        self._resolved: dict[tuple, Allow] = {}
        self._used_regions = False
        self._addresses: dict[str, Address] = {}
        self._networks: dict[str, Network] = {}
        self._allow_texts: dict[tuple, Allow] = {}

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = load_catalog()
        return self._catalog

    def spec(self) -> Spec:
        data = self.mapping(self.doc.data, "", TOP_KEYS, required=("version", "cluster", "forwards"))
        forwards_raw = data["forwards"]
        if not isinstance(forwards_raw, list):
            raise ModelError("forwards", "must be a list of forwards")
        if len(forwards_raw) > MAX_FORWARDS:
            raise ModelError("forwards", f"has {len(forwards_raw)} entries; at most {MAX_FORWARDS} are supported")
        relay = self.relay(data.get("relay", {}))
        forwards = tuple(self.forward(item, i) for i, item in enumerate(forwards_raw))
        return Spec(cluster=self.string(data["cluster"], "cluster"), relay=relay, forwards=forwards,
                    version=data["version"], origin=self.doc.file, digest=self.doc.digest,
                    catalog="" if self._catalog is None or not self._used_regions else self._catalog.identity)

    # -- shapes --------------------------------------------------------------------------
    def mapping(self, value: Any, where: str, keys: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            raise ModelError(where, f"must be a mapping, not {type(value).__name__}")
        if _KNOWN[keys].issuperset(value) and None not in map(value.get, required):
            return value
        for key in value:
            if key not in keys:
                hint = difflib.get_close_matches(str(key), keys, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else f" (known keys: {', '.join(keys)})"
                raise ModelError(f"{where}.{key}" if where else str(key), f"unknown key{suggestion}")
        for key in required:
            if key not in value or value[key] is None:
                raise ModelError(f"{where}.{key}" if where else key, "is required")
        return value

    @staticmethod
    def string(value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise ModelError(where, f"must be a string, not {type(value).__name__}")
        return value

    @staticmethod
    def boolean(value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise ModelError(where, f"must be true or false, not {value!r}")
        return value

    @staticmethod
    def ports(value: Any, where: str) -> tuple[int, ...]:
        if not isinstance(value, list):
            raise ModelError(where, "must be a list of port numbers")
        return tuple(check_port(port, f"{where}[{index}]") for index, port in enumerate(value))

    def address(self, value: Any, where: str) -> IPAddress:
        if type(value) is str and value in self._addresses:  # large specs name the same targets often
            return self._addresses[value]
        if not isinstance(value, str) or not value or len(value) > 64 or not (value.isascii() and value.isprintable()):
            raise ModelError(where, f"{value!r} is not an IP address")
        try:
            address = Address(value)
        except Exception:
            raise ModelError(where, f"{value!r} is not an IP address") from None
        self._addresses[value] = address
        return address

    def network(self, value: Any, where: str) -> IPNetwork:  # ASCII only: netaddr reads '/٢٤' as /24
        if type(value) is str and value in self._networks:
            return self._networks[value]
        if not isinstance(value, str) or not value or len(value) > 64 or not (value.isascii() and value.isprintable()):
            raise ModelError(where, f"{value!r} is not a CIDR")
        try:
            net = Network(value)  # a bare address is its /32 or /128
        except Exception:
            raise ModelError(where, f"{value!r} is not a CIDR") from None
        if "/" in value and net.ip != net.network:
            raise ModelError(where, f"{value} has host bits set (did you mean {net.cidr}?)")
        self._networks[value] = net
        return net

    # -- sections ------------------------------------------------------------------------
    def relay(self, raw: Any) -> Relay:
        data = self.mapping(raw, "relay", RELAY_KEYS)
        with at("relay"):
            return Relay(
                os=self.string(data.get("os", "linux"), "os"),  # type: ignore[arg-type]  # Relay checks it
                interface=None if data.get("interface") is None else self.string(data["interface"], "interface"),
                address=None if data.get("address") is None else self.address(data["address"], "address"),
                management_ports=self.ports(data.get("management_ports", []), "management_ports"),
            )

    def forward(self, raw: Any, index: int) -> Forward:
        # This runs once per forward: the shapes of a plain forward are checked inline (the field
        # path is only spelled for an error), anything else goes through mapping().
        if type(raw) is dict and _FORWARD_SET.issuperset(raw) and None not in map(raw.get, _FORWARD_REQUIRED):
            data, listen, to = raw, raw["listen"], raw["to"]
        else:
            data = self.mapping(raw, f"forwards[{index}]", FORWARD_KEYS, required=_FORWARD_REQUIRED)
            listen, to = data["listen"], data["to"]
        if not (type(listen) is dict and _LISTEN_SET.issuperset(listen) and listen.get("port") is not None):
            listen = self.mapping(listen, f"forwards[{index}].listen", LISTEN_KEYS, required=("port",))
        if not (type(to) is dict and _TO_SET.issuperset(to) and None not in map(to.get, _TO_REQUIRED)):
            to = self.mapping(to, f"forwards[{index}].to", TO_KEYS, required=_TO_REQUIRED)
        try:  # `with at(where)`, inlined; each value's check in field order, the common type inline
            name = data["name"]
            if type(name) is not str:
                name = self.string(name, "name")
            address = listen.get("address")
            if address is not None:
                address = self.address(address, "listen.address")
            takeover = listen.get("takeover", False)
            if type(takeover) is not bool:
                takeover = self.boolean(takeover, "listen.takeover")
            to_address = self.address(to["address"], "to.address")
            protocol = data.get("protocol", "tcp")
            if type(protocol) is not str:
                protocol = self.string(protocol, "protocol")
            masquerade = data.get("masquerade", True)
            if type(masquerade) is not bool:
                masquerade = self.boolean(masquerade, "masquerade")
            local = data.get("local", False)
            if type(local) is not bool:
                local = self.boolean(local, "local")
            allow = data.get("allow")
            return Forward(name, Endpoint(listen["port"], address, takeover), Endpoint(to["port"], to_address),
                           protocol, masquerade, local,  # type: ignore[arg-type]  # Forward checks the protocol
                           None if allow is None else self.allow(allow))
        except ModelError as problem:
            where = f"forwards[{index}]"
            raise ModelError(f"{where}.{problem.field}" if problem.field else where, problem.message) from None

    def allow(self, raw: Any) -> Allow:
        data = self.mapping(raw, "allow", ALLOW_KEYS)
        regions, cidrs = data.get("regions", []), data.get("cidrs", [])
        text_key = None  # large specs repeat the same whitelist text many times: resolve it once
        if type(regions) is list and type(cidrs) is list and all(type(v) is str for v in (*regions, *cidrs)):
            text_key = (tuple(regions), tuple(cidrs))
            if text_key in self._allow_texts:
                return self._allow_texts[text_key]
        for key, value in (("regions", regions), ("cidrs", cidrs)):
            if not isinstance(value, list):
                raise ModelError(f"allow.{key}", "must be a list")
        region_ids = tuple(self.string(r, f"allow.regions[{i}]") for i, r in enumerate(regions))
        self._used_regions = self._used_regions or bool(region_ids)
        for index, region in enumerate(region_ids):
            if region not in self.catalog.ids:
                hint = difflib.get_close_matches(region, self.catalog.ids, n=1)
                message = unknown_region(region, self.catalog)
                if hint:
                    message = f"unknown region {region!r} (did you mean {hint[0]!r}?); known regions: " \
                              f"{', '.join(self.catalog.ids)}"
                raise ModelError(f"allow.regions[{index}]", message)
        nets = tuple(self.network(c, f"allow.cidrs[{i}]") for i, c in enumerate(cidrs))
        if not region_ids and not nets:
            raise ModelError("allow", "is empty: it would admit no source at all (omit `allow` to admit any)")
        resolved_key = (region_ids, nets)
        if resolved_key not in self._resolved:  # large specs repeat the same whitelist many times
            resolved = [n for region in region_ids for n in self.catalog.region(region).networks] + list(nets)
            self._resolved[resolved_key] = Allow(region_ids, nets, tuple(Network(n) for n in cidr_merge(resolved)))
        if text_key is not None:
            self._allow_texts[text_key] = self._resolved[resolved_key]
        return self._resolved[resolved_key]




class LoadedSpec:
    """A spec together with its source document, so later checks (a dialect's) can still name the line."""

    def __init__(self, spec: Spec, doc: Located) -> None:
        self.spec, self.doc = spec, doc

    def check(self, function, *args):
        """Call `function(*args)`; a ModelError it raises becomes an InputError at the right line."""
        try:
            return function(*args)
        except ModelError as problem:
            raise self.doc.error(problem.field, problem.message) from None


def catalog_warnings(loaded: LoadedSpec, catalog: Catalog | None = None) -> list[str]:
    """One line per whitelisted region whose catalog entry is private address space (RFC 1918):
    the rules would admit any host there, on-prem ones included. Warned, not refused: the vendor's
    table says so (docs/spec.md, the region catalog)."""
    private: dict[str, list[str]] = {}
    for anomaly in (catalog or load_catalog()).anomalies():
        if anomaly.code == "private-range":
            for region in anomaly.regions:
                private.setdefault(region, []).append(str(anomaly.cidr))
    users: dict[str, list[str]] = {}
    for index, forward in enumerate(loaded.spec.forwards):
        for at_index, region in enumerate(forward.allow.regions if forward.allow is not None else ()):
            if region in private:
                users.setdefault(region, []).append(f"forwards[{index}].allow.regions[{at_index}]")
    out = []
    for region, fields in users.items():
        more = f" ({len(fields) - 1} more forward(s) use it)" if len(fields) > 1 else ""
        message = (f"region {region}'s catalog entry {', '.join(private[region])} is private address space "
                   f"(RFC 1918): the whitelist admits every host in it, on-prem ones included{more}")
        out.append(str(loaded.doc.error(fields[0], message)))
    return out


def open_spec(path: str | Path, catalog: Catalog | None = None) -> LoadedSpec:
    doc = load_file(path)
    return LoadedSpec(build_spec(doc, catalog), doc)


__all__ = ["InputError", "LoadedSpec", "build_spec", "catalog_warnings", "load_spec", "open_spec", "parse_spec"]
