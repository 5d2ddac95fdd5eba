"""The route the kernel would use towards an address (interface, gateway, source): `ip route get`
through pyroute2's netlink, imported only when asked. A lookup sends no packet."""

from __future__ import annotations


def route_to(host: str) -> dict:
    """{"interface", "gateway", "source"} or {"error": ...}; never raises."""
    try:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError
    except ImportError as missing:
        return {"error": f"pyroute2 is not installed ({missing})"}
    try:
        with IPRoute() as ipr:
            found = ipr.route("get", dst=host)
            if not found:
                return {"error": "no route"}
            route = found[0]
            oif = route.get("RTA_OIF")
            links = ipr.get_links(oif) if oif else []
            return {"interface": links[0].get("IFLA_IFNAME") if links else None,
                    "gateway": route.get("RTA_GATEWAY"), "source": route.get("RTA_PREFSRC"),
                    "on_link": route.get("RTA_GATEWAY") is None}
    except NetlinkError as problem:
        return {"error": str(problem.args[1] if len(problem.args) > 1 else problem)}
    except OSError as problem:
        return {"error": str(problem)}
