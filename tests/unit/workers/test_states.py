"""The connection state table: illegal transitions raise, ERROR is final, the generated doc is current."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from workers.http1.errors import LocalProtocolError
from workers.http1.limits import Limits
from workers.http1.server_conn import ServerConn
from workers.http1.states import TRANSITIONS, ConnState, check_transition, render_markdown

DOC = Path(__file__).resolve().parents[3] / "docs" / "http1-state-machine.md"
ALL_PAIRS = list(itertools.product(ConnState, ConnState))


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(ConnState)


@pytest.mark.parametrize(("old", "new"), [p for p in ALL_PAIRS if p[1] in TRANSITIONS[p[0]]],
                         ids=lambda s: s.name)
def test_allowed_transitions_pass(old: ConnState, new: ConnState) -> None:
    check_transition(old, new)


@pytest.mark.parametrize(("old", "new"), [p for p in ALL_PAIRS if p[1] not in TRANSITIONS[p[0]]],
                         ids=lambda s: s.name)
def test_transitions_outside_the_table_raise(old: ConnState, new: ConnState) -> None:
    with pytest.raises(LocalProtocolError) as info:
        check_transition(old, new)
    assert old.name in str(info.value) and new.name in str(info.value)


def test_error_is_final_and_reachable_from_every_other_state() -> None:
    assert TRANSITIONS[ConnState.ERROR] == frozenset()
    for state in ConnState:
        if state is not ConnState.ERROR:
            assert ConnState.ERROR in TRANSITIONS[state]


def test_the_core_checks_its_transitions() -> None:
    conn = ServerConn(Limits())
    with pytest.raises(LocalProtocolError):
        conn.start_tunnel()  # IDLE -> TUNNEL is not in the table: a bug of the caller
    assert conn.state is ConnState.IDLE


def test_generated_doc_is_current() -> None:
    assert DOC.read_text() == render_markdown(), (
        "docs/http1-state-machine.md is stale: run `python -m workers.http1.states > docs/http1-state-machine.md`")


def test_doc_lists_every_transition_and_limit() -> None:
    text = render_markdown()
    for old, news in TRANSITIONS.items():
        for new in news:
            assert f"{old.name} --> {new.name}" in text
    for name in ("MAX_REQUEST_LINE_BYTES", "MAX_FIELD_LINE_BYTES", "MAX_HEAD_BYTES", "MAX_HEADER_COUNT",
                 "MAX_CHUNK_LINE_BYTES", "MAX_TRAILER_BYTES", "MAX_RESPONSE_HEAD_BYTES"):
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}`"))
        assert row.rstrip(" |").split("|")[-1].strip(), f"{name} has no justification in the doc"
