"""The manifests source watching a real directory in a thread: edits, breakage, recovery, deletes, stop."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from fastingress.errors import SourceError
from fastingress.model.objects import Ingress, Kind, ObjectKey, Service
from fastingress.model.problems import Problem
from fastingress.model.store import Change
from fastingress.sources.base import Source
from fastingress.sources.manifests import ManifestsSource
from tests.support.manifests import INGRESS_TEMPLATE

pytestmark = pytest.mark.integration

POLL_S = 0.05
DEADLINE_S = 5.0  # generous for a loaded CI machine; a healthy run takes a few poll intervals

INGRESS = INGRESS_TEMPLATE.replace("{namespace}", "default")

SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: 80}}]}}\n"

WEB = (Kind.INGRESS, ObjectKey("default", "web"))


def ingress(name: str = "web", host: str = "a.example.com") -> str:
    return INGRESS.format(name=name, host=host)


class CountingEvent(threading.Event):
    """A stop event that counts the source's waits, i.e. its polls, so tests never guess with sleeps."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return super().wait(timeout)


class Recorder:
    """Collects emits from the source thread and replays them into the state a consumer would hold."""

    def __init__(self) -> None:
        self.inbox: queue.Queue[tuple[list[Change], list[Problem]]] = queue.Queue()
        self.batches: list[list[Change]] = []
        self.objects: dict[tuple[Kind, ObjectKey], object] = {}
        self.problems: list[Problem] = []

    def emit(self, changes: Sequence[Change], problems: Sequence[Problem]) -> None:
        self.inbox.put((list(changes), list(problems)))

    def wait_until(self, condition: Callable[[Recorder], bool], what: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not condition(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"timed out waiting for {what}; objects={self.objects} problems={self.problems}")
            try:
                changes, problems = self.inbox.get(timeout=min(remaining, POLL_S / 5))  # re-check conditions
            except queue.Empty:
                continue
            self.batches.append(changes)
            self.problems = problems
            for change in changes:
                if change.obj is None:
                    self.objects.pop((change.kind, change.key), None)
                else:
                    self.objects[(change.kind, change.key)] = change.obj

    def host_of(self, ident: tuple[Kind, ObjectKey] = WEB) -> str | None:
        obj = self.objects.get(ident)
        return obj.rules[0].host if isinstance(obj, Ingress) else None


class Running:
    """A source running in its thread, with its recorder and stop event."""

    def __init__(self, source: ManifestsSource) -> None:
        self.source, self.recorder, self.stop = source, Recorder(), CountingEvent()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="manifests-test", daemon=True)
        self.thread.start()
        self.recorder.wait_until(lambda r: len(r.batches) == 1, "the initial emit")

    def _run(self) -> None:
        try:
            self.source.run(self.recorder.emit, self.stop)
        except BaseException as exc:  # surfaced by the test that expects it
            self.errors.append(exc)

    def polls(self) -> int:
        return self.stop.waits


@pytest.fixture
def watch(tmp_path: Path) -> Iterator[Callable[[], Running]]:
    started: list[Running] = []

    def start() -> Running:
        running = Running(ManifestsSource(tmp_path, poll_interval_s=POLL_S))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop.set()
        running.thread.join(timeout=DEADLINE_S)
        assert not running.thread.is_alive()
        assert running.errors == []


def rewrite_in_place(path: Path, text: str) -> None:
    """Overwrite keeping the inode; retry until the timestamps move (a coarse clock tick at most)."""
    before = os.stat(path)
    path.write_text(text)
    while (os.stat(path).st_mtime_ns, os.stat(path).st_ctime_ns) == (before.st_mtime_ns, before.st_ctime_ns):
        time.sleep(0.001)
        path.write_text(text)


def replace_atomically(path: Path, text: str) -> None:
    """What careful editors and `kubectl`-style tools do: write a temp file, then rename over."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def test_the_source_satisfies_the_source_protocol(tmp_path: Path) -> None:
    source: Source = ManifestsSource(tmp_path)
    assert source.name == "manifests"


def test_the_first_emit_is_the_whole_directory_as_additions(tmp_path: Path, watch: Callable[[], Running]) -> None:
    (tmp_path / "app.yaml").write_text(ingress() + "---\n" + SERVICE.format(name="web"))
    (tmp_path / "broken.yaml").write_text("kind: [\n")
    running = watch()
    [first] = running.recorder.batches
    assert {(c.kind, c.key) for c in first} == {WEB, (Kind.SERVICE, ObjectKey("default", "web"))}
    assert all(c.obj is not None for c in first)
    assert [p.reason for p in running.recorder.problems] == ["InvalidYAML"]


def test_an_empty_directory_still_emits_once_to_say_synced(tmp_path: Path, watch: Callable[[], Running]) -> None:
    running = watch()
    assert running.recorder.batches == [[]]
    assert running.recorder.problems == []


def test_nothing_is_emitted_while_nothing_changes(tmp_path: Path, watch: Callable[[], Running]) -> None:
    (tmp_path / "app.yaml").write_text(ingress())
    running = watch()
    polls = running.polls()
    running.recorder.wait_until(lambda r: running.polls() >= polls + 5, "five more polls")
    assert running.recorder.inbox.empty()
    assert len(running.recorder.batches) == 1


def test_an_edit_is_picked_up_without_restart(tmp_path: Path, watch: Callable[[], Running]) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(ingress(host="a.example.com"))
    running = watch()
    replace_atomically(path, ingress(host="bb.example.com"))
    running.recorder.wait_until(lambda r: r.host_of() == "bb.example.com", "the new host")
    assert running.recorder.batches[-1] == [Change(WEB[0], WEB[1], running.recorder.objects[WEB])]


def test_a_same_size_in_place_edit_is_noticed(tmp_path: Path, watch: Callable[[], Running]) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(ingress(host="a.example.com"))
    running = watch()
    rewrite_in_place(path, ingress(host="b.example.com"))
    running.recorder.wait_until(lambda r: r.host_of() == "b.example.com", "the same-size edit")


def test_a_broken_edit_keeps_the_old_objects_and_a_fix_recovers(tmp_path: Path, watch: Callable[[], Running]) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(ingress())
    (tmp_path / "other.yaml").write_text(SERVICE.format(name="other"))
    running = watch()
    broken = ingress().replace("pathType: Prefix", "pathType: [Prefix")  # the "]" not saved yet
    rewrite_in_place(path, broken)
    running.recorder.wait_until(lambda r: bool(r.problems), "the problem report")
    [problem] = running.recorder.problems
    line = broken.splitlines().index("        backend:") + 1  # where the parser gives up
    assert (problem.reason, problem.origin, problem.field) == ("InvalidYAML", f"app.yaml:{line}", f"line {line}")
    assert "last good version" in problem.message
    assert running.recorder.host_of() == "a.example.com"  # the route is still there
    assert running.recorder.batches[-1] == []  # only the problem changed
    replace_atomically(path, ingress(host="fixed.example.com"))
    running.recorder.wait_until(lambda r: r.host_of() == "fixed.example.com" and not r.problems, "the fix")
    assert len(running.recorder.objects) == 2


def test_new_files_add_and_deleted_files_delete(tmp_path: Path, watch: Callable[[], Running]) -> None:
    (tmp_path / "app.yaml").write_text(ingress())
    running = watch()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "more.yml").write_text(ingress("more", host="more.example.com"))
    more = (Kind.INGRESS, ObjectKey("default", "more"))
    running.recorder.wait_until(lambda r: more in r.objects, "the new file's Ingress")
    (tmp_path / "app.yaml").unlink()
    running.recorder.wait_until(lambda r: WEB not in r.objects, "the deletion")
    assert Change(WEB[0], WEB[1], None) in running.recorder.batches[-1]
    assert set(running.recorder.objects) == {more}
    renumbered = running.recorder.objects[more]
    assert isinstance(renumbered, Ingress) and renumbered.seq == 0  # now the first Ingress in path order


def test_renames_follow_the_file(tmp_path: Path, watch: Callable[[], Running]) -> None:
    (tmp_path / "a.yaml").write_text(ingress())
    (tmp_path / "b.yaml").write_text(SERVICE.format(name="web"))
    running = watch()
    polls = running.polls()
    os.rename(tmp_path / "a.yaml", tmp_path / "c.yaml")  # same objects, same order: nothing to emit
    running.recorder.wait_until(lambda r: running.polls() >= polls + 5, "a few polls")
    assert len(running.recorder.batches) == 1
    os.rename(tmp_path / "c.yaml", tmp_path / "c.yaml.bak")  # no longer a manifest
    running.recorder.wait_until(lambda r: WEB not in r.objects, "the Ingress to go")
    assert set(running.recorder.objects) == {(Kind.SERVICE, ObjectKey("default", "web"))}


def test_a_configmap_style_symlink_swap_is_noticed(tmp_path: Path, watch: Callable[[], Running]) -> None:
    (tmp_path / "..v1").mkdir()
    (tmp_path / "..v1" / "app.yaml").write_text(ingress(host="v1.example.com"))
    os.symlink("..v1", tmp_path / "..data")
    os.symlink("..data/app.yaml", tmp_path / "app.yaml")
    running = watch()
    assert running.recorder.host_of() == "v1.example.com"
    (tmp_path / "..v2").mkdir()
    (tmp_path / "..v2" / "app.yaml").write_text(ingress(host="v2.example.com"))
    os.symlink("..v2", tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")  # the kubelet's atomic swap
    running.recorder.wait_until(lambda r: r.host_of() == "v2.example.com", "the swapped content")


def test_a_vanished_directory_keeps_the_objects_and_reports_it(tmp_path: Path) -> None:
    root = tmp_path / "manifests"
    root.mkdir()
    (root / "app.yaml").write_text(ingress())
    running = Running(ManifestsSource(root, poll_interval_s=POLL_S))
    try:
        moved = tmp_path / "elsewhere"
        root.rename(moved)
        running.recorder.wait_until(lambda r: bool(r.problems), "the directory problem")
        assert [p.reason for p in running.recorder.problems] == ["UnreadableDirectory"]
        assert WEB in running.recorder.objects
        moved.rename(root)
        running.recorder.wait_until(lambda r: not r.problems, "the recovery")
        assert WEB in running.recorder.objects
    finally:
        running.stop.set()
        running.thread.join(timeout=DEADLINE_S)
    assert running.errors == []


def test_stop_ends_run_promptly_even_with_a_long_poll_interval(tmp_path: Path) -> None:
    (tmp_path / "app.yaml").write_text(SERVICE.format(name="web"))
    running = Running(ManifestsSource(tmp_path, poll_interval_s=60.0))
    started = time.monotonic()
    running.stop.set()
    running.thread.join(timeout=DEADLINE_S)
    assert not running.thread.is_alive()
    assert time.monotonic() - started < 1.0
    assert running.errors == []
    assert isinstance(running.recorder.objects.get((Kind.SERVICE, ObjectKey("default", "web"))), Service)


def test_a_missing_directory_fails_run_with_source_error(tmp_path: Path) -> None:
    source = ManifestsSource(tmp_path / "missing", poll_interval_s=POLL_S)
    with pytest.raises(SourceError):
        source.run(lambda changes, problems: None, threading.Event())
