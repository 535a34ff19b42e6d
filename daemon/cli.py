"""La orden ``videonote-dl``: run, submit, demo, cancel, status, events, show, retry, reap, verify, check-config.

Los códigos de salida están en ``daemon.exit_codes`` (y en README.md). Cada mensaje de error dice
qué hacer y nombra la configuración en uso.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from daemon import __version__
from daemon.cli_errors import CliError, UsageError
from daemon.config import CONFIG_ENV_VAR, SYSTEM_CONFIG, ConfigError, Settings, config_label, find_config, load_settings
from daemon.exit_codes import (
    EXIT_CODES,
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_PERMISSION,
    EXIT_PIPE,
)
from daemon.ids import InvalidCorrelationId, new_correlation_id, validate_correlation_id
from daemon.permissions import permission_message
from daemon.submit import submit_job, write_into_spool
from daemon.units import format_duration, format_size

__all__ = ["main"]


# Un ejemplo por orden (``--help`` los muestra; una prueba comprueba que ninguna quede sin él).
EXAMPLES: dict[str, str] = {
    "run": "videonote-dl run --config /etc/videonote-dl/config.yaml",
    "submit": "videonote-dl submit https://example.org/clip.mp4 --id clip-42 --wait",
    "demo": "videonote-dl demo --id clip-42",
    "cancel": "videonote-dl cancel clip-42",
    "status": "videonote-dl status --watch",
    "events": "videonote-dl events --follow --event 'job.*' --since 10m",
    "show": "videonote-dl show clip-42",
    "retry": "videonote-dl retry clip-42",
    "reap": "videonote-dl reap --dry-run",
    "verify": "videonote-dl verify",
    "check-config": "videonote-dl check-config --config /etc/videonote-dl/config.yaml",
}


def _exit_code_epilog() -> str:
    lines = "\n".join(f"  {code:>3}  {meaning.replace('`', '')}" for code, meaning in EXIT_CODES)
    return f"exit codes:\n{lines}\n\nrun `videonote-dl COMMAND --help` for a command's arguments and an example."


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="FILE",
        help=f"config file (default: ${CONFIG_ENV_VAR}, else ./config.yaml if it exists, else {SYSTEM_CONFIG}, "
             "else built-in defaults); relative paths inside resolve against the file's folder")
    parser = argparse.ArgumentParser(
        prog="videonote-dl", description="Download supervisor daemon and its command-line tools.",
        epilog=_exit_code_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"videonote-dl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=text, description=text[0].upper() + text[1:] + ".",
                              epilog=f"example:\n  {EXAMPLES[name]}",
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    command("run", "run the daemon in the foreground (Ctrl-C stops it; a second Ctrl-C stops at once)")
    submit = command("submit", "submit a download job (written into the spool's incoming/ folder)")
    submit.add_argument("url", help="what to download: a direct http(s) file URL, or a video page for yt-dlp")
    submit.add_argument("--id", help="correlation id: 1-64 of A-Z a-z 0-9 _ - (default: generated)")
    submit.add_argument("--filename", help="file name to publish as (a bare name; default: from the URL)")
    submit.add_argument("--sha256", help="expected sha256 of the file; checked before it is published")
    submit.add_argument("--output-dir", help="folder inside the output root to publish into")
    submit.add_argument("--downloader", choices=("auto", "http", "ytdlp"), default=None,
                        help="http: a plain file; ytdlp: a video page; auto (default): ytdlp when one of its "
                             "extractors claims the URL, else http")
    submit.add_argument("--format", help="yt-dlp format selector, e.g. 'bv*+ba/b' (ytdlp only)")
    submit.add_argument("--priority", type=int, default=None,
                        help="-1000..1000, higher runs first among queued jobs (default 0)")
    submit.add_argument("--wait", action="store_true", help="wait for the job to finish, showing progress")
    submit.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="with --wait: give up waiting after SECONDS (the job keeps running)")
    demo = command("demo", "a first job that works offline: serve a file on 127.0.0.1 and submit it to the "
                           "running daemon, waiting for the result")
    demo.add_argument("--id", help="correlation id of the demo job (default: generated)")
    demo.add_argument("--size", default="8MiB", help="size of the served file (default 8MiB)")
    demo.add_argument("--rate", default="4MiB", help="serve at this many bytes per second (default 4MiB)")
    demo.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                      help="give up waiting after SECONDS (default 120)")
    cancel = command("cancel", "cancel a queued or running job")
    cancel.add_argument("id", help="the job's correlation id")
    cancel.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="wait up to SECONDS for the daemon's answer: cancelled, or too late because the job "
                             "was already being published (0: only leave the request; default 10)")
    status = command("status", "show the daemon's live status: running jobs with progress, queue, totals")
    status.add_argument("--watch", action="store_true", help="refresh every second until Ctrl-C")
    events = command("events", "show the event log, filtered and readable")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events (survives logrotate)")
    events.add_argument("--job", metavar="ID", help="only this job's events")
    events.add_argument("--event", metavar="PATTERN", help="only events matching PATTERN, e.g. 'job.*'")
    events.add_argument("--since", metavar="WHEN", help="only events newer than 10m, 2h, or an ISO time")
    events.add_argument("--json", action="store_true", help="print raw JSON lines (for jq)")
    show = command("show", "everything known about one job: record, file, events, what to fix")
    show.add_argument("id", help="the job's correlation id")
    retry = command("retry", "resubmit a failed or cancelled job as a new one (ID-r1, ID-r2, ...)")
    retry.add_argument("id", help="the failed job's correlation id")
    reap = command("reap", "remove stale temp dirs once (the daemon also does it every reaper.interval)")
    reap.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    verify = command("verify", "check the spool's invariants: nothing lost, nothing partial")
    verify.add_argument("--running", action="store_true", help="the daemon is running: skip idle-only checks")
    verify.add_argument("--event-log", action="append", type=Path, default=[], help="log to check (repeat: per host)")
    check = command("check-config", "validate the config and print every key as it is in effect")
    check.add_argument("--reference", action="store_true", help="print the config reference (Markdown)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    settings: Settings | None = None
    try:
        settings = load_settings(args.config)
        handler = globals()[f"_cmd_{args.command.replace('-', '_')}"]
        code = int(handler(args, settings))
        sys.stdout.flush()  # dentro del try: una tubería cerrada se trata aquí, no al salir
        return code
    except ConfigError as exc:
        print(f"videonote-dl: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except CliError as exc:
        print(f"videonote-dl: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # ``show X | head``: el lector se fue. Sin traza; stdout a /dev/null para que el vaciado
        # final del intérprete no vuelva a fallar.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_PIPE
    except PermissionError as exc:
        label = config_label(settings) if settings is not None else f"config {find_config(args.config)[0]}"
        print(f"videonote-dl: {permission_message(exc.filename or '?', 'read', label)}", file=sys.stderr)
        return EXIT_PERMISSION


def _invoked_as() -> str:
    """Cómo repetir esta orden en otra terminal: ``videonote-dl`` si está en el PATH, si no su ruta."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) != "videonote-dl":
        return "videonote-dl"
    on_path = shutil.which("videonote-dl")
    if on_path and os.path.realpath(on_path) == os.path.realpath(argv0):
        return "videonote-dl"
    relative = os.path.relpath(argv0)
    return relative if not relative.startswith("..") else os.path.abspath(argv0)


def _cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.events import configure_events
    from daemon.service import run_daemon

    try:
        configure_events(settings.event_log, settings.log_level)
    except OSError as exc:
        if isinstance(exc, PermissionError):
            raise CliError(permission_message(exc.filename or settings.event_log, "open the event log",
                                              config_label(settings), write=True), EXIT_PERMISSION) from None
        raise CliError(f"cannot open event log {settings.event_log}: {exc.strerror}; fix event_log in "
                       f"{config_label(settings)} or the folder's permissions") from None
    print(f"videonote-dl: spool {settings.spool_dir}, event log {settings.event_log} ({config_label(settings)}); "
          f"submit a first job from another terminal: {_invoked_as()} demo", file=sys.stderr, flush=True)
    return run_daemon(settings)


def _job_id(value: str | None) -> str:
    try:
        return validate_correlation_id(value) if value else new_correlation_id()
    except InvalidCorrelationId as exc:
        raise UsageError(str(exc)) from None


def _cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    job: dict[str, Any] = {"url": args.url, "id": _job_id(args.id)}
    for key in ("filename", "sha256", "output_dir", "downloader", "format", "priority"):
        value = getattr(args, key)
        if value is not None:
            job[key] = value
    submission = submit_job(settings, job)
    print(submission.job_id, flush=True)
    if not args.wait:
        return EXIT_OK
    from daemon.progress_view import wait_for_job
    from daemon.submit import own_outcome

    return wait_for_job(settings.spool_dir, settings.event_log, submission.job_id, args.timeout,
                        finder=lambda: own_outcome(settings.spool_dir, submission))


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.demo import run_demo

    return run_demo(settings, _job_id(args.id), args.size, args.rate, args.timeout, _daemon_state(settings))


def _cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.cancel_cmd import cmd_cancel

    return cmd_cancel(settings, _job_id(args.id), args.timeout, _daemon_alive)


def _daemon_alive(status: dict[str, Any]) -> bool:
    pid = status.get("pid")
    if status.get("state") != "running" or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _daemon_state(settings: Settings) -> tuple[dict[str, Any] | None, bool]:
    """(estado leído, vivo). Sin permiso para leer el estado, ``PermissionError``."""
    from daemon.status import read_status

    status = read_status(settings.status_file)
    return status, status is not None and _daemon_alive(status)


def _print_status(settings: Settings) -> int:
    status, alive = _daemon_state(settings)
    if status is None:
        print(f"daemon not running: no status file at {settings.status_file} ({config_label(settings)}); start "
              "it with `make run` (checkout) or `sudo systemctl start videonote-dl`", file=sys.stderr)
        return EXIT_NOT_RUNNING
    from daemon.status import status_age

    counts = status.get("counts", {})
    age = status_age(status)
    fresh = f" ({format_duration(age)} ago)" if age is not None else ""
    print(f"daemon: {'running' if alive else 'NOT running'} (pid {status.get('pid')}, "
          f"up {format_duration(status.get('uptime_s', 0))}, last update {status.get('updated_at')}{fresh}, "
          f"last scan {status.get('last_scan')})")
    print(f"jobs:   running {len(status.get('running', []))}, queued {status.get('queued', 0)}, "
          f"waiting in incoming {status.get('incoming_waiting', 0)}; max_concurrent {status.get('max_concurrent')}")
    print(f"totals: done {counts.get('done', 0)}, failed {counts.get('failed', 0)}, "
          f"cancelled {counts.get('cancelled', 0)}, rejected {counts.get('rejected', 0)}, "
          f"requeued {counts.get('requeued', 0)} (since start)")
    running = status.get("running", [])
    if running:
        print(f"  {'ID':<26} {'STATE':<9} {'DONE':>6} {'BYTES':>11} {'SPEED':>12}  ATTEMPT")
    for job in running:
        total = job.get("total")
        percent = f"{job['bytes'] * 100 / total:5.1f}%" if total else "     ?"
        print(f"  {job['id']:<26} {job['state']:<9} {percent:>6} {format_size(job['bytes']):>11}"
              f" {format_size(job.get('speed', 0)) + '/s':>12}  {job.get('attempt')}")
    if not alive:
        print(f"the daemon is not running ({config_label(settings)}): start it with `make run` (checkout) or "
              "`sudo systemctl start videonote-dl`", file=sys.stderr)
    return EXIT_OK if alive else EXIT_NOT_RUNNING


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    if not args.watch:
        return _print_status(settings)
    while True:
        if sys.stdout.isatty():
            sys.stdout.write("\033[H\033[2J")
        _print_status(settings)
        sys.stdout.flush()
        time.sleep(1.0)


def _cmd_events(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.cli_inspect import cmd_events

    try:
        return cmd_events(settings, args.job, args.event, args.since, args.follow, args.json)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.cli_inspect import cmd_show

    return cmd_show(settings, _job_id(args.id))


def _cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.cli_inspect import cmd_retry

    return cmd_retry(settings, _job_id(args.id), write_into_spool)


def _cmd_reap(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.config import shown_value
    from daemon.events import configure_events
    from daemon.reaper import reap_temp_root

    configure_events(settings.event_log, settings.log_level, stderr=False)
    report = reap_temp_root(settings.temp_dir, settings.reaper.max_age, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for entry in report.removed:
        print(f"{verb} {settings.temp_dir / entry.name} (age {format_duration(entry.age)}, "
              f"{format_size(entry.bytes_freed)})")
    print(f"{verb} {len(report.removed)} entr{'y' if len(report.removed) == 1 else 'ies'}, "
          f"{format_size(report.bytes_freed)}; skipped {report.locked} locked, {report.young} younger than "
          f"{shown_value(settings, 'reaper.max_age')}; {report.errors} error(s)")
    return EXIT_FAILED if report.errors else EXIT_OK


def _cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.verify import verify_spool

    report = verify_spool(settings, daemon_stopped=not args.running, event_logs=args.event_log)
    for problem in report.problems:
        print(f"PROBLEM {problem}")
    print(f"{'OK' if report.ok else 'FAILED'}: {report.jobs} jobs, {report.published} published files checked, "
          f"{report.events} events read, {len(report.problems)} problem(s)")
    return EXIT_OK if report.ok else EXIT_FAILED


def _cmd_check_config(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.config import SCHEMA, shown_value
    from daemon.downloaders.ytdlp.tools import print_tools

    if args.reference:
        from daemon.config_reference import render_config_reference

        sys.stdout.write(render_config_reference())
        return EXIT_OK
    _path, origin = find_config(args.config)
    print(f"config OK: {settings.source} ({origin})" if settings.source else f"config OK: {config_label(settings)}")
    print("\n".join(f"  {spec.key} = {shown_value(settings, spec.key)}" for spec in SCHEMA))
    print_tools(settings)  # qué yt-dlp, ffmpeg y deno usarán los trabajos (issue 16)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
