"""The manifests source: a directory of Kubernetes YAML/JSON files as the input of the control plane.

Responsibility: read every `*.yaml`, `*.yml` and `*.json` file under a directory (recursively, in a
deterministic order), turn each document into model objects through `fastingress.model.convert`,
and report what changed as `Change`s plus the full current list of `Problem`s. `load_manifests` does
one scan with no thread (for `fastingress check` and `fastingress routes`); `ManifestsSource` keeps
watching (for `fastingress serve --manifests DIR`).

What it must not do: validate objects itself (that is `model.convert`, one set of rules for every
source), compile or publish anything, or ever drop the rest of the directory because one file is
broken.

Theory of operation:

- *Scan.* A cheap walk with `os.scandir` collects a fingerprint per visible file: (mtime_ns,
  ctime_ns, size, inode, device), following symlinks. Names starting with "." are skipped, so a
  ConfigMap mount is read through its visible symlinks only (never through `..data` or the
  timestamped directories behind it). ctime and inode catch an edit within the same mtime tick with
  the same size, and an atomic rename or symlink swap.
- *Parse.* Only files whose fingerprint changed are read again. YAML is composed node by node so
  that every document (and every `items[]` entry of a `List` or `*List`) knows the line it starts
  on; that line is the object's `origin` ("path:line"). A file is parsed as a whole: a syntax error
  anywhere yields one `InvalidYAML`/`InvalidJSON` problem and no objects from that parse.
- *Keep the last good version.* When a file that parsed before becomes unreadable or broken (a
  half-saved edit), its previously good objects stay and the problem is reported; the next good
  save is diffed as usual. A file that changes while it is being read is read again on the next
  poll rather than trusted.
- *Assemble.* Files are taken in path order (compared directory by directory) and every document is
  converted again, which is cheap next to parsing and keeps a watched directory identical to one
  `load_manifests` scan. Ingresses are numbered in order of appearance across the whole directory:
  that number is `seq`, the creation-order tie-break when `metadata.creationTimestamp` is missing
  (only Ingresses count, so adding a Service never renumbers them). The first of two objects with
  the same kind, namespace and name wins and a `DuplicateObject` problem names both origins. A
  Service annotated `fastingress.io/endpoints` also yields the static EndpointSlice built by
  `model.convert.static_endpoint_slice`, so a site can run on loopback backends with no cluster.
- *Diff.* The new objects are compared with the last emitted ones using `==`; only additions,
  modifications and deletions are emitted, with the full problem list. Nothing is emitted when
  neither objects nor problems changed.

Why polling and not inotify: a stat per file every poll works the same on ConfigMap mounts (where
the kubelet swaps a symlink atomically and inotify watches the wrong inode), on NFS and on overlayfs
(where inotify misses changes made from elsewhere), and needs no extra dependency.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import stat
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs; types-PyYAML is not a dev dep

from fastingress.errors import SourceError
from fastingress.model.convert import convert_object, static_endpoint_slice
from fastingress.model.objects import Kind, ObjectKey, Service
from fastingress.model.problems import Problem
from fastingress.model.store import Change
from fastingress.sources.base import Emit

__all__ = [
    "DEFAULT_POLL_INTERVAL_S",
    "ManifestSet",
    "ManifestsSource",
    "ObjectId",
    "load_manifests",
]

log = logging.getLogger(__name__)

# A stat() per file: a directory of ~1,000 files costs a few ms per poll, and 250 ms keeps an edit
# well inside the reconcile loop's maximum debounce delay (~500 ms) of being served.
DEFAULT_POLL_INTERVAL_S = 0.25
SUFFIXES = (".yaml", ".yml", ".json")

# libyaml's loader is several times faster than the pure-Python one, with the same safe semantics.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

ObjectId = tuple[Kind, ObjectKey]
_Stat = tuple[int, int, int, int, int]  # (mtime_ns, ctime_ns, size, inode, device)
_Doc = tuple[Mapping[str, Any], int]  # one raw object and the 1-based line it starts on


@dataclasses.dataclass(slots=True)
class ManifestSet:
    """The objects and problems of one directory, as the whole of it reads now."""

    objects: dict[ObjectId, object] = dataclasses.field(default_factory=dict)  # by (kind, key); first wins
    problems: list[Problem] = dataclasses.field(default_factory=list)  # file, conversion, duplicates; path order
    origins: dict[ObjectId, str] = dataclasses.field(default_factory=dict)  # "relpath:line" of each object


class _Tree(NamedTuple):
    """The cheap fingerprint of the directory: one stat per visible manifests file."""

    stats: dict[str, _Stat | None]  # relpath ("/"-separated) -> stat, None when stat failed
    problems: tuple[Problem, ...]  # subdirectories that could not be listed


class _Parsed(NamedTuple):
    """One file, read and parsed once."""

    docs: tuple[_Doc, ...]
    problems: tuple[Problem, ...]
    ok: bool  # False when the file could not be read or parsed at all


class _FileState(NamedTuple):
    """What the watcher holds per file: the fingerprint it read and the last good documents."""

    stat: _Stat | None
    docs: tuple[_Doc, ...]
    problems: tuple[Problem, ...]


class _Broken(Exception):
    """A file that cannot be parsed as a whole; becomes one problem."""

    def __init__(self, reason: str, line: int, message: str) -> None:
        super().__init__(message)
        self.reason, self.line, self.message = reason, line, message


def load_manifests(directory: str | Path, *, default_namespace: str = "default") -> ManifestSet:
    """Read the whole directory once; raises `SourceError` when it does not exist or cannot be listed."""
    root = Path(directory)
    tree = _walk_root(root)
    files: dict[str, _FileState] = {}
    for rel, st in tree.stats.items():
        parsed = _read_file(root, rel)
        files[rel] = _FileState(st, parsed.docs, parsed.problems)
    return _assemble(files, tree.problems, default_namespace)


class ManifestsSource:
    """Watches a manifests directory by polling; see the module docstring for how."""

    def __init__(
        self,
        directory: str | Path,
        *,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        default_namespace: str = "default",
    ) -> None:
        self.name = "manifests"
        self.directory = Path(directory)
        self.poll_interval_s = poll_interval_s
        self.default_namespace = default_namespace
        self._tree = _Tree({}, ())
        self._files: dict[str, _FileState] = {}
        self._dir_problems: tuple[Problem, ...] = ()  # the directory itself vanished or is unreadable
        self._current = ManifestSet()

    def run(self, emit: Emit, stop: threading.Event) -> None:
        """Emit the whole directory once, then each change, until `stop` is set.

        Raises `SourceError` when the directory cannot be listed at start; later failures are
        logged and reported as problems while the last good objects keep serving.
        """
        self._tree = _walk_root(self.directory)
        self._files = _refresh(self.directory, self._tree, {})
        self._dir_problems = ()
        self._current = self._assemble()
        emit(_diff({}, self._current.objects), list(self._current.problems))
        log.info(
            "manifests synced from %s: %d objects, %d problems",
            self.directory,
            len(self._current.objects),
            len(self._current.problems),
            extra={"path": str(self.directory)},
        )
        while not stop.wait(self.poll_interval_s):
            try:
                self._poll(emit)
            except Exception:  # a bug in one poll must not end the watch: forget the tree, diff afresh
                log.exception("manifests poll failed", extra={"path": str(self.directory)})
                self._tree = _Tree({}, ())

    def _poll(self, emit: Emit) -> None:
        """One cheap check; re-read changed files and emit the difference, if there is any."""
        try:
            tree = _walk(self.directory)
        except OSError as exc:
            self._set_dir_problems(_dir_problem(self.directory, exc), emit)
            return
        if tree == self._tree and not self._dir_problems:
            return
        self._files = _refresh(self.directory, tree, self._files)
        self._tree, self._dir_problems = tree, ()
        self._publish(emit)

    def _set_dir_problems(self, problem: Problem, emit: Emit) -> None:
        if self._dir_problems == (problem,):
            return
        log.warning("%s", problem.message, extra={"path": str(self.directory), "reason": problem.reason})
        self._dir_problems = (problem,)
        self._publish(emit)

    def _publish(self, emit: Emit) -> None:
        new = self._assemble()
        changes = _diff(self._current.objects, new.objects)
        if not changes and new.problems == self._current.problems:
            return
        emit(changes, list(new.problems))
        self._current = new  # only once delivered: a failed emit is retried by the next poll
        log.info(
            "manifests changed: %d changes, %d problems",
            len(changes),
            len(new.problems),
            extra={"path": str(self.directory)},
        )

    def _assemble(self) -> ManifestSet:
        extra = self._dir_problems + self._tree.problems
        return _assemble(self._files, extra, self.default_namespace)


# --- scanning ---------------------------------------------------------------------------------------


def _walk_root(root: Path) -> _Tree:
    if not root.is_dir():
        raise SourceError(f"manifests directory {root} does not exist or is not a directory")
    try:
        return _walk(root)
    except OSError as exc:
        raise SourceError(f"cannot list manifests directory {root}: {exc.strerror or exc}") from exc


def _walk(root: Path) -> _Tree:
    """Stat every visible manifests file under `root`; raises OSError when `root` cannot be listed."""
    stats: dict[str, _Stat | None] = {}
    problems: list[Problem] = []
    root_stat = os.stat(root)
    seen = {(root_stat.st_dev, root_stat.st_ino)}  # directories already queued: symlink loops end here
    pending = [""]
    while pending:
        rel = pending.pop()
        try:
            with os.scandir(root / rel if rel else root) as it:
                entries = list(it)
        except OSError as exc:
            if not rel:
                raise
            message = f"cannot list directory {rel}: {exc.strerror or exc}"
            problems.append(_file_problem(rel, "UnreadableDirectory", message))
            continue
        for entry in entries:
            _visit(entry, f"{rel}/{entry.name}" if rel else entry.name, stats, pending, seen)
    return _Tree(stats, tuple(sorted(problems)))


def _visit(
    entry: os.DirEntry[str],
    rel: str,
    stats: dict[str, _Stat | None],
    pending: list[str],
    seen: set[tuple[int, int]],
) -> None:
    if entry.name.startswith("."):  # hidden, editors' swap files, ConfigMap's ..data and ..2024_*
        return
    try:
        if entry.is_dir():
            st = entry.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                pending.append(rel)
            return
    except OSError:
        return
    if not entry.name.lower().endswith(SUFFIXES):
        return
    try:
        st = entry.stat()
    except OSError:  # a dangling symlink: reported as unreadable when read
        stats[rel] = None
        return
    if stat.S_ISREG(st.st_mode):  # never open a FIFO or a device: reading it could block the watch
        stats[rel] = _fingerprint(st)


def _fingerprint(st: os.stat_result) -> _Stat:
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev)


def _stat_now(path: Path) -> _Stat | None:
    try:
        return _fingerprint(os.stat(path))
    except OSError:
        return None


def _refresh(root: Path, tree: _Tree, old: Mapping[str, _FileState]) -> dict[str, _FileState]:
    """Per-file state for `tree`, re-reading only the files whose fingerprint changed."""
    files: dict[str, _FileState] = {}
    for rel, st in tree.stats.items():
        prev = old.get(rel)
        if prev is not None and st is not None and prev.stat == st:
            files[rel] = prev
            continue
        files[rel] = _read_state(root, rel, st, prev)
    return files


def _read_state(root: Path, rel: str, st: _Stat | None, prev: _FileState | None) -> _FileState:
    parsed = _read_file(root, rel)
    if parsed.ok:
        if st is None or _stat_now(root / rel) == st:
            return _FileState(st, parsed.docs, parsed.problems)
        # Written to while we read it: keep what we had; the next poll sees a new stat and re-reads.
        log.debug("manifests file %s changed while being read", rel, extra={"path": rel})
        return prev._replace(stat=st) if prev is not None else _FileState(st, (), ())
    first = parsed.problems[0]
    kept = prev.docs if prev is not None else ()
    problems = parsed.problems
    if kept:
        suffix = f"; keeping the {len(kept)} objects of its last good version"
        problems = tuple(
            Problem(p.kind, p.key, p.field, p.reason, p.message + suffix, p.rejected, p.origin) for p in problems
        )
    log.warning("manifests file %s: %s", rel, problems[0].message, extra={"path": rel, "reason": first.reason})
    return _FileState(st, kept, problems)


# --- parsing ----------------------------------------------------------------------------------------


def _read_file(root: Path, rel: str) -> _Parsed:
    try:
        data = (root / rel).read_bytes()
    except OSError as exc:
        message = f"cannot read {rel}: {exc.strerror or exc}"
        return _Parsed((), (_file_problem(rel, "UnreadableFile", message),), False)
    docs: list[_Doc] = []
    problems: list[Problem] = []
    try:
        if rel.lower().endswith(".json"):
            _parse_json(data, rel, docs, problems)
        else:
            _parse_yaml(data, rel, docs, problems)
    except _Broken as exc:
        return _Parsed((), (_file_problem(rel, exc.reason, exc.message, exc.line),), False)
    return _Parsed(tuple(docs), tuple(problems), True)


def _parse_yaml(data: bytes, rel: str, docs: list[_Doc], problems: list[Problem]) -> None:
    loader = _LOADER(data)
    try:
        while loader.check_node():
            node = loader.get_node()
            line = node.start_mark.line + 1
            _expand(loader.construct_document(node), line, _item_lines(node), rel, docs, problems)
    except yaml.YAMLError as exc:
        raise _yaml_broken(exc) from exc
    finally:
        loader.dispose()


def _yaml_broken(exc: Any) -> _Broken:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is None:  # e.g. a ReaderError: bytes that are not UTF-8/UTF-16
        return _Broken("InvalidYAML", 1, f"invalid YAML: {exc}")
    line = mark.line + 1
    detail = getattr(exc, "problem", None) or str(exc)
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
        detail = f"{detail} ({context} started at line {context_mark.line + 1})"
    return _Broken("InvalidYAML", line, f"invalid YAML at line {line}, column {mark.column + 1}: {detail}")


def _parse_json(data: bytes, rel: str, docs: list[_Doc], problems: list[Problem]) -> None:
    try:
        value = json.loads(data)
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8/16/32
        line = getattr(exc, "lineno", 1)
        detail = getattr(exc, "msg", str(exc))
        raise _Broken("InvalidJSON", line, f"invalid JSON at line {line}: {detail}") from exc
    line, item_lines = 1, []
    try:  # JSON is (all but) YAML: borrow the composer for line numbers; without them, line 1
        node = yaml.compose(data, Loader=_LOADER)
        if node is not None:
            line, item_lines = node.start_mark.line + 1, _item_lines(node)
    except yaml.YAMLError:
        pass
    _expand(value, line, item_lines, rel, docs, problems)


def _item_lines(node: Any) -> list[int]:
    """The start lines of `items[]` when `node` is a mapping that has them (a List document)."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "items" and isinstance(value, yaml.SequenceNode):
                return [child.start_mark.line + 1 for child in value.value]
    return []


def _expand(
    value: object, line: int, item_lines: list[int], rel: str, docs: list[_Doc], problems: list[Problem]
) -> None:
    """Add one document: an object, the items of a `List`/`*List`, or nothing for an empty document."""
    if value is None:  # an empty document, e.g. a trailing "---"
        return
    if not isinstance(value, dict):
        problems.append(_not_an_object(value, rel, line))
        return
    kind = value.get("kind")
    if not (isinstance(kind, str) and kind.endswith("List") and "items" in value):
        docs.append((value, line))
        return
    items = value["items"] if value["items"] is not None else []
    if not isinstance(items, list):
        problems.append(_not_an_object(items, rel, line, what=f"items of {kind}"))
        return
    for index, item in enumerate(items):
        item_line = item_lines[index] if index < len(item_lines) else line
        if not isinstance(item, dict):
            problems.append(_not_an_object(item, rel, item_line, what=f"item {index} of {kind}"))
        elif "kind" not in item and kind != "List":  # typed lists may leave kind out of their items
            typed = {"apiVersion": value.get("apiVersion"), **item, "kind": kind[: -len("List")]}
            docs.append((typed, item_line))
        else:
            docs.append((item, item_line))


def _not_an_object(value: object, rel: str, line: int, what: str = "document") -> Problem:
    message = f"{what} at line {line} is a {type(value).__name__}, not a Kubernetes object (a mapping)"
    return _file_problem(rel, "InvalidObject", message, line)


def _file_problem(rel: str, reason: str, message: str, line: int = 0) -> Problem:
    return Problem(
        kind=Kind.FILE,
        key=ObjectKey("", rel),
        field=f"line {line}" if line else "",
        reason=reason,
        message=message,
        rejected=True,
        origin=f"{rel}:{line}" if line else rel,
    )


def _dir_problem(root: Path, exc: OSError) -> Problem:
    message = f"cannot list manifests directory {root}: {exc.strerror or exc}; keeping the objects read so far"
    return Problem(Kind.FILE, ObjectKey("", "."), "", "UnreadableDirectory", message, True, str(root))


# --- assembling and diffing -------------------------------------------------------------------------


def _path_key(rel: str) -> tuple[str, ...]:
    return tuple(rel.split("/"))  # directory by directory, like a sorted walk


def _assemble(files: Mapping[str, _FileState], extra: tuple[Problem, ...], default_namespace: str) -> ManifestSet:
    """Convert every document in path order; `seq` counts Ingresses across the whole directory."""
    result = ManifestSet(problems=list(extra))
    seq = 0
    for rel in sorted(files, key=_path_key):
        state = files[rel]
        result.problems.extend(state.problems)
        for raw, line in state.docs:
            origin = f"{rel}:{line}"
            converted = convert_object(
                raw, origin=origin, seq=seq, default_namespace=default_namespace, allow_loopback=True
            )
            if converted.kind is Kind.INGRESS:  # only Ingresses carry it; other kinds never renumber them
                seq += 1
            result.problems.extend(converted.problems)
            if converted.kind is None or converted.key is None or converted.obj is None:
                continue
            _admit(result, converted.kind, converted.key, converted.obj, origin)
            if isinstance(converted.obj, Service):  # (None, ()) without the annotation
                eps, eps_problems = static_endpoint_slice(converted.obj, origin=origin)
                result.problems.extend(eps_problems)
                if eps is not None:
                    _admit(result, Kind.ENDPOINT_SLICE, eps.key, eps, origin)
    return result


def _admit(result: ManifestSet, kind: Kind, key: ObjectKey, obj: object, origin: str) -> None:
    """Add one object unless an earlier file (in path order) already defined it."""
    first = result.origins.get((kind, key))
    if first is None:
        result.objects[(kind, key)] = obj
        result.origins[(kind, key)] = origin
        return
    message = f"{kind} {key} at {origin} duplicates the one at {first}; the first one (in path order) is used"
    result.problems.append(Problem(kind, key, "", "DuplicateObject", message, True, origin))


def _diff(old: Mapping[ObjectId, object], new: Mapping[ObjectId, object]) -> list[Change]:
    """Deletions, additions and modifications from `old` to `new`, sorted by kind and key."""
    changes = [Change(kind=kind, key=key, obj=None) for kind, key in old if (kind, key) not in new]
    changes.extend(
        Change(kind=kind, key=key, obj=obj) for (kind, key), obj in new.items() if old.get((kind, key)) != obj
    )
    changes.sort(key=lambda change: (change.kind.value, change.key))
    return changes
