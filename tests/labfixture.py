"""pytest fixtures over netfwd.lab: a fresh lab per test and a guaranteed teardown, even on failure.

    def test_x(lab): ...                 # client/relay/onprem, random name nf-<name>-*
    def test_y(lab_fw): ...              # same, with firewalld running in the relay
    def test_z(make_lab): lab = make_lab(router=True, onprem_route_back=True)
    def test_c(make_lab, userland): lab = make_lab(userland=userland)   # parametrize userland

Mark such tests ``@pytest.mark.netns`` (they need root; conftest skips them otherwise).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Iterator

import pytest

if TYPE_CHECKING:
    from netfwd.lab import Lab


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")


@pytest.fixture
def make_lab() -> Iterator[Callable[..., "Lab"]]:
    """A factory: ``make_lab(router=..., onprem_route_back=..., firewalld=...)``; all torn down after the test."""
    _need_root()
    from netfwd.lab import Lab

    made: list[Lab] = []

    def factory(*, firewalld: bool = False, **options: object) -> Lab:
        lab = Lab.up(**options)  # type: ignore[arg-type]
        made.append(lab)
        if firewalld:
            lab.start_firewalld()
        return lab

    try:
        yield factory
    finally:
        for lab in reversed(made):
            lab.down()


@pytest.fixture(scope="session")
def centos7_userland():
    """CentOS 7's iptables 1.4.21 + firewalld 0.6.3, built from vendor/ once (cached across sessions)."""
    _need_root()
    from netfwd.lab import userland

    return userland.build()


@pytest.fixture(params=["modern", "centos7"])
def userland(request):
    """Parametrize a test over the relay's userland: this machine's and CentOS 7's."""
    if request.param == "centos7":
        request.getfixturevalue("centos7_userland")
    return request.param


@pytest.fixture
def lab(make_lab):
    """A fresh lab (client, relay, onprem; on-prem has no route back; relay ip_forward off)."""
    return make_lab()


@pytest.fixture
def lab_fw(make_lab):
    """A fresh lab whose relay runs firewalld (private D-Bus, mount namespace, /etc/firewalld)."""
    return make_lab(firewalld=True)
