"""The ``cas-store`` command line: a thin layer over the engine.

Every command opens the store named by ``--store`` (or ``CAS_STORE``, or the default
under the user's data directory), calls one engine method and prints its result: a
table on a terminal, plain lines in a pipe, JSON with ``--json``. Engine errors become
one line on stderr and a non-zero exit status (see ``EXIT_CODES``), never a traceback.
"""

from __future__ import annotations

import enum
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import default_store_path, errors
from .model import Version
from .store import Store

#: Exit status per error class, checked in order (subclasses first). Usage errors exit 2.
EXIT_CODES: list[tuple[type[errors.CasError], int]] = [
    (errors.NotFound, 3),
    (errors.AlreadyExists, 4),
    (errors.Conflict, 4),
    (errors.InvalidInput, 5),
    (errors.IntegrityError, 6),
    (errors.StorageError, 7),
    (errors.CasError, 1),
]

app = typer.Typer(
    name="cas-store",
    help="A content-addressed, versioned store for chat sessions.\n\n"
    "Every save keeps the previous version; nothing is overwritten. Point the commands at"
    " a store with --store PATH or CAS_STORE (a SQLite file, or"
    " postgresql://user:pass@host:port/db; default: sessions.db under the user's data"
    " directory).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

#: The largest version number, count or offset the command line accepts: the API's bound
#: (api/schemas.MAX_SEQ), far below SQLite's integers, so no number overflows a query.
MAX_NUMBER = 2**53 - 1


class Durability(enum.StrEnum):
    """SQLite's durability levels (SYNCHRONOUS_MODES), as --synchronous takes them, any case."""

    FULL = "FULL"
    NORMAL = "NORMAL"
    EXTRA = "EXTRA"


class _State:
    store_path: str = str(default_store_path())  # a file path or a postgresql:// URL
    objects: str | None = None
    synchronous: str = "FULL"
    debug: bool = False


state = _State()


@app.callback()
def _main(
    store: Annotated[
        str | None,
        typer.Option("--store", "-s", envvar="CAS_STORE",
                     help="Store: a SQLite file, or postgresql://user:pass@host:port/db.",
                     show_default=False),
    ] = None,
    objects: Annotated[
        str | None,
        typer.Option("--objects", envvar="CAS_STORE_OBJECTS",
                     help="Object bytes in s3://bucket/prefix (with a postgresql:// store).",
                     show_default=False),
    ] = None,
    synchronous: Annotated[
        Durability,
        typer.Option(envvar="CAS_STORE_SYNCHRONOUS", case_sensitive=False,
                     help="Durability: FULL (an acknowledged save survives power loss),"
                     " NORMAL (survives a crash of the process; faster) or EXTRA (FULL,"
                     " and the journal's directory synced too)."),
    ] = Durability.FULL,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show the traceback of an unexpected error."),
    ] = False,
) -> None:
    """Choose the store every command works on."""
    state.store_path = store or str(default_store_path())
    state.objects = objects or None
    state.synchronous = synchronous.value
    state.debug = debug


def store_exists(location: str) -> bool:
    """Return True if the store can be assumed present: a URL always (it is opened to tell)."""
    from .backends import is_url

    return is_url(location) or Path(location).exists()


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one error line and exit with code."""
    err.print("[red]error:[/red] ", end="", markup=True)
    err.print(message, markup=False)
    raise typer.Exit(code)


def bounded(value: int | None, name: str, low: int = 1) -> int | None:
    """Return value if it lies in [low, MAX_NUMBER] (or is None); else one line and exit 5."""
    if value is not None and not low <= value <= MAX_NUMBER:
        fail(f"{name} must be between {low} and {MAX_NUMBER}, not {value}", 5)
    return value


@contextmanager
def opened(*, must_exist: bool = True) -> Iterator[Store]:
    """Open the chosen store for one command, mapping engine errors to one line + exit."""
    from . import open_store

    path = state.store_path
    if must_exist and not store_exists(path):
        fail(f"no store at {path}: point --store (or CAS_STORE) at one, or create it with"
             " `cas-store serve` or `cas-store import DIR` (the first write creates the file)", 3)
    try:
        store = open_store(path, objects=state.objects, synchronous=state.synchronous)
    except (errors.CasError, ValueError) as exc:
        fail(str(exc), exit_code(exc))
    try:
        yield store
    except errors.CasError as exc:
        fail(str(exc), exit_code(exc))
    finally:
        store.close()


def exit_code(exc: BaseException) -> int:
    """Return the exit status for an engine error (1 for anything unclassified)."""
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return 1


def when(ts: float) -> str:
    """Return a local, second-precision timestamp."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def print_json(value: Any) -> None:
    """Print a JSON document to stdout."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def show_table(table: Table, rows: list[list[str]]) -> None:
    """Print rows under their header: a rich table on a terminal, tab-separated otherwise."""
    if out.is_terminal:
        for r in rows:
            table.add_row(*r)
        out.print(table)
    else:
        sys.stdout.write("\t".join(str(c.header) for c in table.columns) + "\n")
        for r in rows:
            sys.stdout.write("\t".join(r) + "\n")


def plural(n: int, one: str, many: str | None = None) -> str:
    """Return "1 message" / "2 messages" (n with thousands separators)."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def _flags(v: Version) -> str:
    if v.suspect_shrink:
        return "SUSPECT SHRINK"
    return "intentional shrink" if v.intentional_shrink else ""


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


# --- commands ------------------------------------------------------------------------------


@app.command("ls")
def ls_cmd(
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many.")] = 50,
    query: Annotated[str | None, typer.Option("--query", "-q", help="Filter on title or id.")]
    = None,
    deleted: Annotated[bool, typer.Option("--deleted", help="Include deleted sessions.")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """List sessions, most recently updated first.

    Example: cas-store ls -n 20 -q rome
    """
    with opened() as store:
        page = store.list_sessions(limit=limit, query=query, include_deleted=deleted)
    if as_json:
        print_json([s.to_json() for s in page.sessions])
        return
    table = Table("session", "title", "messages", "seq", "updated", "flags")
    show_table(table, [
        [s.session_id, s.title, str(s.message_count), str(s.seq), when(s.updated_at),
         " ".join(f for f, on in (("deleted", s.deleted), ("SUSPECT", s.suspect_shrink)) if on)]
        for s in page.sessions
    ])


@app.command("log")
def log_cmd(
    session: Annotated[str, typer.Argument(help="Session id.")],
    limit: Annotated[int | None, typer.Option("--limit", "-n", help="At most this many.")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a session's version history, newest first.

    Example: cas-store log chat-1 -n 10
    """
    bounded(limit, "--limit")
    with opened() as store:
        versions = store.versions(session, limit=limit)
    if as_json:
        print_json([v.to_json() for v in versions])
        return
    table = Table("seq", "when", "op", "messages", "bytes", "flags", "manifest")
    show_table(table, [
        [str(v.seq), when(v.created_at), v.op, str(v.message_count), str(v.bytes), _flags(v),
         v.manifest[:12]]
        for v in versions
    ])


def _split_ref(ref: str) -> tuple[str, int | None]:
    sid, at, seq = ref.partition("@")
    if not at:
        return sid, None
    try:
        number = int(seq)
    except ValueError:
        fail(f"bad version in {ref!r}: expected SESSION@SEQ with a number", 2)
    return sid, bounded(number, f"the version in {ref!r}")


@app.command("show")
def show_cmd(
    ref: Annotated[str, typer.Argument(metavar="SESSION[@SEQ]", help="Session, at a version.")],
    as_json: JsonOpt = False,
    meta_only: Annotated[bool, typer.Option("--meta", help="Metadata only.")] = False,
) -> None:
    """Show a session (or one of its versions): metadata and messages.

    Example: cas-store show chat-1@3 --json
    """
    sid, seq = _split_ref(ref)
    shrink = None
    with opened() as store:
        if seq is None and not as_json:
            shrink = _unresolved_shrink(store, sid)
        if meta_only:
            meta = store.load_meta(sid, seq=seq)
            if as_json:
                print_json(meta.to_json())
                return
            session_meta, messages = meta, None
        else:
            s = store.load(sid, seq=seq)
            if as_json:
                print_json(s.to_json())
                return
            session_meta, messages = s.meta, s.messages
    out.print(f"[bold]{session_meta.session_id}[/bold] @ {session_meta.seq}  "
              f"{plural(session_meta.message_count, 'message')}, "
              f"{plural(session_meta.bytes, 'byte')}")
    out.print(json.dumps(session_meta.metadata, ensure_ascii=False, indent=2), markup=False)
    for i, m in enumerate(messages or []):
        _print_message(i, m)
    if seq is None and shrink is not None:
        err.print(f"note: version {shrink[0].seq} dropped messages ({shrink[1]} → "
                  f"{shrink[0].message_count}) without saying it meant to, and nothing has"
                  f" restored them since. To bring them back with everything written after:"
                  f" cas-store recover -- {sid}  (add --dry-run to see what it would do)",
                  markup=False)


def _unresolved_shrink(store: Store, sid: str) -> tuple[Version, int] | None:
    """Return the head's unresolved suspect shrink and the count before it, or None."""
    versions = store.versions(sid)
    for i, v in enumerate(versions):
        if v.op in ("restore", "recover"):
            return None
        if v.suspect_shrink:
            before = versions[i + 1].message_count if i + 1 < len(versions) else 0
            return v, before
    return None


def _clip(text: str, limit: int = 500) -> str:
    return text[:limit] + ("…" if len(text) > limit else "")


def _print_message(i: int, m: Any) -> None:
    """Print one message: index, role, content, and each tool call it makes or answers."""
    role = m.get("role", "?") if isinstance(m, dict) else "?"
    content = m.get("content", "") if isinstance(m, dict) else m
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    answers = m.get("tool_call_id") if isinstance(m, dict) else None
    out.print(f"[dim]{i:>5}[/dim] [bold]{role}[/bold]"
              + (f" [dim](answers {answers})[/dim]" if isinstance(answers, str) else "") + ": ",
              end="")
    out.print(_clip(text), markup=False)
    calls = m.get("tool_calls") if isinstance(m, dict) else None
    for call in calls if isinstance(calls, list) else ():
        fn = call.get("function", {}) if isinstance(call, dict) else {}
        name = fn.get("name", "?") if isinstance(fn, dict) else "?"
        args = fn.get("arguments", "") if isinstance(fn, dict) else ""
        args = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
        cid = call.get("id", "") if isinstance(call, dict) else ""
        out.print(f"        ↳ tool call {name}({_clip(args, 300)})"
                  + (f" [{cid}]" if cid else ""), markup=False)


@app.command("diff")
def diff_cmd(
    session: Annotated[str, typer.Argument(help="Session id.")],
    a: Annotated[int, typer.Argument(help="From version.")],
    b: Annotated[int, typer.Argument(help="To version.")],
    as_json: JsonOpt = False,
) -> None:
    """Show what changed between two versions of a session.

    Example: cas-store diff chat-1 3 5
    """
    bounded(a, "the from version")
    bounded(b, "the to version")
    with opened() as store:
        d = store.diff(session, a, b)
    if as_json:
        print_json(d.to_json())
        return
    out.print(f"{session}: {a} → {b}: {plural(d.common_prefix, 'message')} in common, "
              f"{len(d.removed):,} removed, {len(d.added):,} added")
    for m in d.removed:
        out.print("- " + json.dumps(m, ensure_ascii=False)[:300], markup=False, style="red")
    for m in d.added:
        out.print("+ " + json.dumps(m, ensure_ascii=False)[:300], markup=False, style="green")
    for key, change in d.metadata_changes.items():
        out.print(f"metadata {key}: {json.dumps(change['from'])} → {json.dumps(change['to'])}",
                  markup=False)


@app.command("restore")
def restore_cmd(
    session: Annotated[str, typer.Argument(help="Session id.")],
    seq: Annotated[int, typer.Argument(help="Version to bring back.")],
    expected: Annotated[int | None, typer.Option(help="Fail unless the head is this seq.")]
    = None,
) -> None:
    """Make an old version the head again (recorded as a new version; undoable).

    Example: cas-store restore chat-1 3
    """
    from .model import ANY

    bounded(seq, "the version")
    bounded(expected, "--expected", low=0)
    with opened() as store:
        v = store.restore(session, seq, expected=ANY if expected is None else expected)
    out.print(f"{session}: version {seq} restored as version {v.seq} "
              f"({plural(v.message_count, 'message')})")


@app.command("recover")
def recover_cmd(
    session: Annotated[str | None, typer.Argument(help="Only this session.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report only; change nothing.")]
    = False,
    window_days: Annotated[float | None, typer.Option("--window-days",
                                                      help="Look back this far (default 7).")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """Undo suspect shrinks: bring back lost messages plus everything added since.

    Example: cas-store recover --dry-run
    """
    with opened() as store:
        report = store.recover(session, dry_run=dry_run,
                               window=None if window_days is None else window_days * 86400)
    if as_json:
        print_json(report.to_json())
        return
    if not report.actions:
        out.print("nothing to recover")
    for a in report.actions:
        if a.action == "skipped":
            out.print(f"{a.session_id}: skipped ({a.reason})", markup=False)
        else:
            verb = "would recover" if dry_run else "recovered"
            out.print(f"{a.session_id}: {verb} {a.from_count:,} → {plural(a.to_count, 'message')}"
                      f" (shrink at version {a.shrink_seq})", markup=False)


@app.command("fsck")
def fsck_cmd(as_json: JsonOpt = False) -> None:
    """Verify every object's hash and that every version is complete; changes nothing.

    Exits 6 when a problem is found. Example: cas-store fsck
    """
    with opened() as store:
        if err.is_terminal and not as_json:
            from rich.progress import Progress, SpinnerColumn, TextColumn

            with Progress(SpinnerColumn(), TextColumn("fsck: {task.description}"),
                          TextColumn("{task.completed:,}"), console=err,
                          transient=True) as bar:
                task = bar.add_task("starting", total=None)

                def show(phase: str, done: int) -> None:
                    bar.update(task, description=phase, completed=done)

                report = store.fsck(progress=show)
        else:
            report = store.fsck()
    if as_json:
        print_json(report.to_json())
    else:
        out.print(f"{report.objects_checked} objects, {report.versions_checked} versions,"
                  f" {report.sessions_checked} sessions checked")
        for p in report.problems:
            where = ", ".join(f"{s}@{q}" for s, q in p.affects[:10])
            more = f" (+{len(p.affects) - 10} more)" if len(p.affects) > 10 else ""
            out.print(f"{p.kind} {p.object_id}: {p.detail}; affects {where or 'nothing'}{more}",
                      markup=False)
        out.print("ok" if report.ok else f"{len(report.problems)} problem(s)")
    if not report.ok:
        raise typer.Exit(6)


@app.command("search")
def search_cmd(
    query: Annotated[str, typer.Argument(help='Words (all must match), "a phrase", prefix*.')],
    limit: Annotated[int, typer.Option(help="Hits to show (1-100).")] = 20,
    all_versions: Annotated[bool, typer.Option("--all-versions",
                                               help="Search every kept version too.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Search the messages of every session; print session, index, version, role, snippet.

    Example: cas-store search '"blue green" deploy*'
    """
    from .backends.base import HIT_END, HIT_START

    with opened() as store:
        page = store.search(query, limit=limit, versions="all" if all_versions else "head")
    if as_json:
        print_json(page.to_json())
        return
    rows = []
    for h in page.hits:
        text = " ".join(h.snippet.split())
        if out.is_terminal:
            text = escape(text).replace(HIT_START, "[bold yellow]").replace(
                HIT_END, "[/bold yellow]")
        else:
            text = text.replace(HIT_START, "[").replace(HIT_END, "]")
        rows.append([h.session_id, str(h.index), str(h.seq), h.role, text])
    table = Table("session", "index", "seq", "role", "snippet")
    show_table(table, rows)
    if not rows:
        err.print("no match")


@app.command("reindex")
def reindex_cmd(as_json: JsonOpt = False) -> None:
    """Rebuild the search index from the version log; writers may keep writing meanwhile.

    Example: cas-store reindex
    """
    with opened() as store:
        report = store.reindex()
    if as_json:
        print_json(report.to_json())
    else:
        out.print(f"indexed {report.sessions} sessions ({report.versions} versions,"
                  f" {report.spans} message spans) in {report.seconds:.1f} s")


@app.command("stats")
def stats_cmd(as_json: JsonOpt = False) -> None:
    """Show counts and sizes of the store.

    Example: cas-store stats --json
    """
    with opened() as store:
        s = store.stats()
    if as_json:
        print_json(s.to_json())
        return
    rows = [["backend", s.backend], ["location", s.location],
            ["sessions", f"{s.sessions:,}"], ["deleted sessions", f"{s.deleted_sessions:,}"],
            ["versions", f"{s.versions:,}"]]
    rows += [[f"{kind} objects", f"{n:,}"] for kind, n in s.objects.items()]
    rows += [["message and object bytes", f"{s.payload_bytes:,} ({_size(s.payload_bytes)})"],
             ["stored (compressed)", f"{s.stored_bytes:,} ({_size(s.stored_bytes)})"],
             ["on disk", f"{s.disk_bytes:,} ({_size(s.disk_bytes)})"]]
    show_table(Table("figure", "value"), rows)


@app.command("gc")
def gc_cmd(
    keep_last: Annotated[int | None, typer.Option(
        "--keep-last", min=1, help="Keep each session's N newest versions.")] = None,
    keep_within: Annotated[str | None, typer.Option(
        "--keep-within", metavar="DURATION",
        help="Keep versions newer than this (30d, 12h, 90m, 45s).")] = None,
    deleted_retention: Annotated[str, typer.Option(
        "--deleted-retention", metavar="DURATION",
        help="Drop deleted sessions entirely this long after deletion.")] = "30d",
    grace: Annotated[str, typer.Option(
        "--grace", metavar="DURATION",
        help="Spare unreferenced objects written this recently.")] = "1h",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report only; change nothing.")]
    = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Sweep even a damaged store (may delete what a repair needs).")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete old versions by a retention policy, then every object no version reaches.

    By default every version is kept and only unreferenced objects go.

    A damaged store (an object some version needs is missing or unreadable) is never
    swept: nothing is deleted, the sessions affected are named, and the exit status is 6.
    Run fsck; --force sweeps anyway (with --dry-run it says what it would lose).

    --keep-last and --keep-within combine: a version survives if either keeps it.

    The head, and the versions recovery may still need, always stay.

    Safe while a server writes; safe to interrupt (run it again to finish).

    Example: cas-store gc --keep-last 20 --keep-within 30d --dry-run
    """
    from .gc import gc, parse_duration, report_lines

    def refused(exc: errors.StoreDamaged) -> NoReturn:
        if as_json:
            print_json({"error": {"code": exc.code, "message": str(exc), **exc.details}})
            raise typer.Exit(6)
        fail(f"gc refused: the store is damaged ({len(exc.objects)} objects missing or"
             f" unreadable; sessions affected: {', '.join(exc.sessions) or 'none'});"
             " nothing was deleted. Run `cas-store fsck` to see the damage; --force"
             " sweeps anyway (--force --dry-run says what it would lose)", 6)

    def run_gc(store: Store, **progress: Any) -> Any:
        try:
            return gc(store, keep_last=keep_last, keep_within=within,
                      deleted_retention=deleted, grace=spare, dry_run=dry_run, force=force,
                      **progress)
        except errors.StoreDamaged as exc:  # before opened() maps it to a plain line
            refused(exc)

    try:
        within = None if keep_within is None else parse_duration(keep_within)
        deleted = parse_duration(deleted_retention)
        spare = parse_duration(grace)
    except ValueError as exc:
        fail(str(exc), 2)
    try:
        with opened() as store:
            if err.is_terminal and not as_json:
                from rich.progress import Progress

                with Progress(console=err, transient=True) as bar:
                    task = bar.add_task("gc", total=None)

                    def show(phase: str, done: int, total: int | None) -> None:
                        bar.update(task, description=phase, completed=done, total=total)

                    report = run_gc(store, progress=show)
            else:
                report = run_gc(store)
    except KeyboardInterrupt:
        fail("interrupted; the store is consistent: run gc again to finish", 130)
    if as_json:
        print_json(report.to_json())
        return
    for line in report_lines(report):
        out.print(line, markup=False)


def _size(n: float) -> str:
    """Return a byte count with a binary unit (1.5 MiB)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


@app.command("import")
def import_cmd(
    directory: Annotated[Path, typer.Argument(help="Directory of <sid>.json files.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report only; change nothing.")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """Import a directory of JSON session files: one <sid>.json per session; idempotent.

    messages become the message list, big list fields (context_messages, tool_calls, ...)
    named lists, every other field the metadata; created_at/updated_at the times.
    A <sid>.json.bak arrives first as the older version (so a wiped file can be
    recovered); an orphaned .bak becomes a deleted session. Files that cannot be
    imported are skipped with one line each on stderr; each session is imported whole
    or not at all. Running it again adds nothing for unchanged files.

    Example: cas-store import ~/chat-ui/sessions --dry-run
    """
    import contextlib
    import tempfile

    from .jsondir import SkippedFile, import_json_dir

    if not directory.is_dir():
        fail(f"{directory} is not a directory", 2)

    def skipped(s: SkippedFile) -> None:
        err.print(f"skipped {s.path}: {s.reason}", markup=False)

    with contextlib.ExitStack() as stack:
        if dry_run and not store_exists(state.store_path):
            # Nothing to compare with: a dry run against an empty, throw-away store.
            state.store_path = str(
                Path(stack.enter_context(tempfile.TemporaryDirectory())) / "dry")
        store = stack.enter_context(opened(must_exist=False))
        if err.is_terminal and not as_json:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            with Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(),
                          console=err, transient=True) as bar:
                task = bar.add_task("import", total=None)

                def show(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                report = import_json_dir(store, directory, dry_run=dry_run, on_skip=skipped,
                                         progress=show)
        else:
            report = import_json_dir(store, directory, dry_run=dry_run, on_skip=skipped)
    if as_json:
        print_json(report.to_json())
        return
    verb = "would import" if dry_run else "imported"
    out.print(f"{verb} {report.sessions} sessions ({report.sessions_created} new,"
              f" {report.sessions_updated} updated, {report.sessions_deleted} deleted),"
              f" {report.sessions_unchanged} unchanged: {report.versions} versions,"
              f" {report.messages} messages", markup=False)
    line = f"read {report.files} files, {_size(report.bytes_in)}"
    if not dry_run:
        ratio = report.dedup_ratio
        line += (f"; stored {_size(report.bytes_stored)}"
                 f" (dedup ratio {ratio:.2f})" if ratio is not None else
                 f"; stored {_size(report.bytes_stored)}")
    out.print(f"{line}; {report.seconds:.1f} s", markup=False)
    if report.skipped:
        out.print(f"skipped {len(report.skipped)} files (listed on stderr)", markup=False)
    if report.suspect:
        out.print(f"{len(report.suspect)} sessions end in a suspect shrink (a wiped file with"
                  " its backup); to bring their messages back: cas-store recover",
                  markup=False)


@app.command("export")
def export_cmd(
    session: Annotated[str, typer.Argument(help="Session id.")],
    seq: Annotated[int | None, typer.Option("--seq", help="As of this version.")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write to FILE (atomically) instead of stdout.",
        metavar="FILE", show_default=False)] = None,
) -> None:
    """Write a session (or one of its versions) as one JSON object, the shape it was imported in.

    Metadata fields, named lists and messages; equal as JSON to the imported file.

    Example: cas-store export chat-1 --seq 3 -o chat-1.json
    """
    from .jsondir import fsync_dir, write_atomic, write_session

    bounded(seq, "--seq")
    with opened() as store:
        if output is None:
            write_session(store, session, sys.stdout, seq=seq)
            return
        try:
            write_atomic(output, lambda f: write_session(store, session, f, seq=seq))
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror or exc}", 1)
        fsync_dir(output.parent)


@app.command("export-dir")
def export_dir_cmd(
    directory: Annotated[Path, typer.Argument(help="Directory to write <sid>.json files to.")],
    include_deleted: Annotated[bool, typer.Option(
        "--include-deleted", help="Also write deleted sessions, as <sid>.json.bak.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write every session as <sid>.json into a directory (each file atomically).

    The directory can be imported again; with --include-deleted, deleted sessions are
    written as orphaned <sid>.json.bak files, which an import turns back into deleted
    sessions. Existing files of the same name are replaced; others are left alone.

    Example: cas-store export-dir ./backup --include-deleted
    """
    from .jsondir import export_dir

    with opened() as store:
        try:
            report = export_dir(store, directory, include_deleted=include_deleted)
        except OSError as exc:
            fail(f"cannot write to {directory}: {exc.strerror or exc}", 1)
    if as_json:
        print_json(report.to_json())
        return
    out.print(f"wrote {report.sessions} sessions ({report.deleted} deleted),"
              f" {report.messages} messages, {_size(report.bytes_out)} to {directory}",
              markup=False)


@app.command("migrate")
def migrate_cmd(
    to: Annotated[str, typer.Option(
        "--to", metavar="DEST", help="Destination store (created if missing).",
        show_default=False)],
    objects: Annotated[str | None, typer.Option(
        "--objects", metavar="s3://BUCKET/PREFIX",
        help="Keep the destination's object bytes in S3 (endpoint and keys from AWS_*).",
        show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Copy every session with its whole version history to another store, then verify it.

    Versions keep their numbers, operations, flags and times.

    Every object is read back from the destination and re-hashed; every version compared.

    Safe to interrupt: run it again to continue. A run over a finished copy changes nothing.

    Example: cas-store --store sessions.db migrate --to copy.db
    """
    from . import open_store
    from .migrate import migrate

    try:
        with opened() as store:
            try:
                dest = open_store(to, objects=objects, synchronous=state.synchronous)
            except (errors.CasError, ValueError) as exc:
                fail(str(exc), exit_code(exc))
            try:
                if err.is_terminal and not as_json:
                    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

                    with Progress(TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), console=err, transient=True) as bar:
                        task = bar.add_task("copying", total=None)

                        def show(phase: str, done: int, total: int) -> None:
                            bar.update(task, description=phase, completed=done, total=total)

                        report = migrate(store.backend, dest.backend, progress=show)
                else:
                    report = migrate(store.backend, dest.backend)
            finally:
                dest.close()
    except KeyboardInterrupt:
        fail("interrupted; both stores are consistent: run migrate again to continue", 130)
    if as_json:
        print_json(report.to_json())
    else:
        out.print(f"copied {report.versions_copied} versions of {report.sessions_copied}"
                  f" sessions, {report.objects_copied} objects ({_size(report.bytes_copied)});"
                  f" source: {report.sessions} sessions, {report.versions} versions",
                  markup=False)
        out.print(f"verified {report.versions_verified} versions and"
                  f" {report.objects_verified} objects on {dest.backend.location};"
                  f" {report.seconds:.1f} s", markup=False)
        if report.sessions_changed:
            out.print(f"{report.sessions_changed} sessions changed on the source during the"
                      " run: run migrate again to copy their new versions", markup=False)
        for p in report.problems:
            out.print(p, markup=False)
        out.print("ok" if report.ok else f"{len(report.problems)} problem(s)")
    if not report.ok:
        raise typer.Exit(6)


@app.command("serve")
def serve_cmd(
    host: Annotated[str | None, typer.Option(
        metavar="HOST", help="Address to bind (default 127.0.0.1; env CAS_STORE_HOST)."
        " Any other than loopback needs a token.", show_default=False)] = None,
    port: Annotated[int | None, typer.Option(
        metavar="PORT", help="TCP port (default 8000; env CAS_STORE_PORT).",
        show_default=False)] = None,
    token: Annotated[str | None, typer.Option(
        metavar="TOKEN", help="Require 'Authorization: Bearer TOKEN' on every /api route"
        " (env CAS_STORE_TOKEN).", show_default=False)] = None,
    cors_origin: Annotated[list[str] | None, typer.Option(
        "--cors-origin", help="Allow this browser origin (repeatable; env"
        " CAS_STORE_CORS_ORIGINS, comma-separated). CORS is off without one.", metavar="ORIGIN",
        show_default=False)] = None,
    max_body_bytes: Annotated[int | None, typer.Option(
        metavar="BYTES",
        help="Largest request body (default 32 MiB; env CAS_STORE_MAX_BODY_BYTES).",
        show_default=False)] = None,
    body_timeout: Annotated[float | None, typer.Option(
        metavar="SECONDS", help="408 for a request body not all in after this long (default"
        " 15; env CAS_STORE_BODY_TIMEOUT).", show_default=False)] = None,
    header_timeout: Annotated[float | None, typer.Option(
        metavar="SECONDS", help="Close a connection that has not sent a request's headers"
        " this long after connecting or its last response (default 10; env"
        " CAS_STORE_HEADER_TIMEOUT).", show_default=False)] = None,
    keep_alive_timeout: Annotated[float | None, typer.Option(
        metavar="SECONDS", help="Close an idle keep-alive connection after this long"
        " (default 5; env CAS_STORE_KEEP_ALIVE_TIMEOUT).", show_default=False)] = None,
    max_connections: Annotated[int | None, typer.Option(
        metavar="N", help="Most connections held at once (default: from the open-file"
        " limit; env CAS_STORE_MAX_CONNECTIONS).", show_default=False)] = None,
    max_messages: Annotated[int | None, typer.Option(
        metavar="N", help="Most messages one request may carry (default 100000; env"
        " CAS_STORE_MAX_MESSAGES).", show_default=False)] = None,
    load_cache_mb: Annotated[int | None, typer.Option(
        metavar="MIB", help="MiB of decoded messages kept for repeat loads of a"
        " conversation (default 32; 0: none; env CAS_STORE_LOAD_CACHE_MB).",
        show_default=False)] = None,
    allowed_host: Annotated[list[str] | None, typer.Option(
        "--allowed-host", metavar="NAME", help="Also accept requests whose Host is NAME"
        " (repeatable; env CAS_STORE_ALLOWED_HOSTS, comma-separated). Loopback names and"
        " the bound --host are always accepted.", show_default=False)] = None,
    recover: Annotated[bool | None, typer.Option(
        "--recover/--no-recover", help="Run recovery before accepting requests"
        " (default: on).", show_default=False)] = None,
    log_level: Annotated[str | None, typer.Option(
        metavar="LEVEL", help="uvicorn log level (default info).", show_default=False)] = None,
) -> None:
    """Serve the HTTP API (and the version-history pages) on the chosen store.

    Binds the port first, then runs recovery once before accepting requests and logs what
    it restored; a port in use exits 7 with the store untouched.
    Listens on 127.0.0.1 unless --host says otherwise; refuses any other address without a
    token. Answers only requests naming it by a loopback name, the --host or an
    --allowed-host (421 otherwise: DNS rebinding).

    Example: cas-store --store chats.db serve --port 8000
    """
    from pydantic import ValidationError

    from .api import create_app
    from .api.server import BindError, bind, default_backlog, open_file_limit, serve
    from .api.settings import Settings

    given: dict[str, Any] = {
        "host": host, "port": port, "token": token, "cors_origins": cors_origin,
        "max_body_bytes": max_body_bytes, "body_timeout": body_timeout,
        "header_timeout": header_timeout, "keep_alive_timeout": keep_alive_timeout,
        "max_connections": max_connections, "max_messages": max_messages,
        "load_cache_mb": load_cache_mb,
        "allowed_hosts": allowed_host, "recover_on_start": recover, "log_level": log_level,
    }
    try:
        settings = Settings(store=state.store_path, objects=state.objects,
                            synchronous=state.synchronous,
                            **{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        fail("; ".join(_settings_problem(e) for e in exc.errors()), 2)
    # The socket first: a server that cannot listen must not have opened (or recovered,
    # or migrated) the store.
    try:
        sock = bind(settings.host, settings.port, default_backlog(open_file_limit()))
    except BindError as exc:
        fail(exc.strerror or str(exc), exit_code(errors.StorageError("")))
    try:
        application = create_app(settings)
    except (errors.CasError, ValueError) as exc:
        sock.close()
        fail(str(exc), exit_code(exc))
    serve(settings, sock, application, log_config=_log_config())


def _settings_problem(e: Any) -> str:
    """Return one readable line for a settings validation error."""
    msg = str(e.get("msg", "invalid setting")).removeprefix("Value error, ")
    loc = ".".join(str(p) for p in e.get("loc", ()))
    return f"{loc}: {msg}" if loc else msg


def _log_config() -> dict[str, Any]:
    """Return uvicorn's logging setup, extended to the API's own logger (recovery lines)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["cas_store"] = {"handlers": ["default"], "level": "INFO",
                                      "propagate": False}
    return config


#: Options of the whole command line, with how many values each takes. People type them
#: after the command too (`cas-store serve --store x.db`); main() moves them in front.
GLOBAL_OPTIONS: dict[str, int] = {"--store": 1, "-s": 1, "--synchronous": 1, "--objects": 1,
                                  "--debug": 0}


def hoist_global_options(argv: list[str]) -> list[str]:
    """Return argv with global options given after the command moved before it.

    Stops at ``--``: what follows is arguments (a session id may start with a dash).
    """
    head: list[str] = []
    rest: list[str] = []
    i = 0
    seen_command = False
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest.extend(argv[i:])
            break
        name = a.split("=", 1)[0]
        if seen_command and name in GLOBAL_OPTIONS:
            n = 0 if "=" in a else GLOBAL_OPTIONS[name]
            head.extend(argv[i:i + 1 + n])
            i += 1 + n
            continue
        if not seen_command and not a.startswith("-"):
            seen_command = True
            rest.append(a)
        elif not seen_command:
            head.append(a)
            if a in GLOBAL_OPTIONS and i + 1 < len(argv):
                head.append(argv[i + 1])
                i += 1
        else:
            rest.append(a)
        i += 1
    return head + rest


def _unwrap(doc: str) -> str:
    """Join a docstring's hard-wrapped lines into paragraphs (the terminal wraps them)."""
    import inspect

    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def _flag_type(self: typer.core.TyperOption, ctx: Any) -> str | None:
    # A flag takes no value: show no "<bool>" type for it in --help.
    return None if self.is_flag else _value_type(self, ctx)


_value_type = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]
for _info in app.registered_commands:
    if _info.callback is not None and _info.callback.__doc__:
        _info.help = _unwrap(_info.callback.__doc__)


def main() -> None:
    """Run the command line: any error prints one line and exits non-zero, never a traceback.

    Engine errors exit with their code (``EXIT_CODES``); anything unexpected (a bug)
    exits 1 with one line, and with ``--debug`` its traceback.
    """
    try:
        app(args=hoist_global_options(sys.argv[1:]), prog_name="cas-store")
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:
        if state.debug:
            import traceback

            traceback.print_exc()
        else:
            err.print("[red]error:[/red] ", end="", markup=True)
            err.print(f"unexpected {type(exc).__name__}: {exc} (run with --debug to see the"
                      " traceback)", markup=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
