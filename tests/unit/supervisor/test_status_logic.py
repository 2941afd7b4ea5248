"""The status writer's pure decisions (fastingress/supervisor/status.py): what is desired, what the patch
says, when an owned Ingress is written and when one that left our set is cleared. No sockets, no clock."""

from __future__ import annotations

import pytest

from fastingress.sources.lbstatus import LBAddress, parse_lb_ingress
from fastingress.supervisor.status import (
    SETTLE_S,
    Written,
    is_clear_needed,
    is_write_needed,
    parse_publish_address,
    status_patch,
)

IP: tuple[LBAddress, ...] = (("203.0.113.7", ""),)
OTHER: tuple[LBAddress, ...] = (("10.9.9.9", ""),)
NONE: tuple[LBAddress, ...] = ()


@pytest.mark.parametrize(("text", "expected"), [
    ("", ()),
    (" , ,", ()),
    ("203.0.113.7", (("203.0.113.7", ""),)),
    ("lb.example.com", (("", "lb.example.com"),)),
    # sorted like parse_lb_ingress sorts, duplicates collapse, IPv6 in its canonical form
    ("203.0.113.7, lb.example.com,203.0.113.7, 2001:DB8::1", (("", "lb.example.com"), ("2001:db8::1", ""),
                                                              ("203.0.113.7", ""))),
    ("1.2.3.4.example", (("", "1.2.3.4.example"),)),
])
def test_parse_publish_address(text: str, expected: tuple[LBAddress, ...]) -> None:
    assert parse_publish_address(text) == expected


def test_the_patch_round_trips_through_the_index_parser() -> None:
    addresses = parse_publish_address("lb.example.com, 203.0.113.7, 2001:db8::1")
    patch = status_patch(addresses)
    assert patch == {"status": {"loadBalancer": {"ingress": [
        {"hostname": "lb.example.com"}, {"ip": "2001:db8::1"}, {"ip": "203.0.113.7"}]}}}
    assert parse_lb_ingress(patch["status"]) == addresses
    assert status_patch(()) == {"status": {"loadBalancer": {"ingress": []}}}  # the clear


def test_an_owned_ingress_is_written_only_when_it_differs() -> None:
    assert is_write_needed(IP, NONE, None, now=0.0)
    assert is_write_needed(IP, OTHER, None, now=0.0)
    assert not is_write_needed(IP, IP, None, now=0.0)
    assert not is_write_needed(NONE, OTHER, None, now=0.0)  # nothing to publish: never an empty list


def test_our_write_in_flight_is_not_repeated_but_a_later_change_is_put_right() -> None:
    written = Written(IP, NONE, at=100.0)
    assert not is_write_needed(IP, NONE, written, now=101.0)  # the watch has not brought our write back yet
    assert is_write_needed(IP, NONE, written, now=100.0 + SETTLE_S)  # ...for too long: write again
    assert is_write_needed(IP, OTHER, written, now=101.0)  # someone else wrote after us
    assert is_write_needed(IP + OTHER, NONE, written, now=101.0)  # the desired addresses changed
    assert not is_write_needed(IP, IP, written, now=101.0)
    assert not is_write_needed(IP, NONE, Written(IP, NONE, at=0.0), now=1.0, settle_s=2.0)


def test_an_ingress_leaving_our_set_is_cleared_only_while_it_shows_our_write() -> None:
    written = Written(IP, NONE, at=100.0)
    assert is_clear_needed(IP, written, now=1000.0)
    assert is_clear_needed(NONE, written, now=101.0)  # our write may still be on its way: clear it too
    assert not is_clear_needed(NONE, written, now=100.0 + SETTLE_S)
    assert not is_clear_needed(OTHER, written, now=101.0)  # the new owner's (or someone's) status: leave it
    assert not is_clear_needed(OTHER, Written(IP, OTHER, at=100.0), now=100.0 + SETTLE_S)
