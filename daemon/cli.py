"""La orden ``videonote-dl``: run, submit, cancel, status, events, show, retry, reap, verify, check-config.

Códigos de salida: 0 bien, 1 fallo, 2 error de uso. Cada mensaje de error dice qué hacer.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from daemon import __version__
from daemon.config import CONFIG_ENV_VAR, ConfigError, Settings, load_settings
from daemon.durable import fsync_dir
from daemon.ids import InvalidCorrelationId, new_correlation_id, validate_correlation_id
from daemon.units import format_duration, format_size

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Error de uso: se informa y se sale con 2."""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE",
                        help=f"config file (default: ${CONFIG_ENV_VAR}, else built-in defaults)")
    parser = argparse.ArgumentParser(prog="videonote-dl", description="Download supervisor daemon.")
    parser.add_argument("--version", action="version", version=f"videonote-dl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", parents=[common], help="run the daemon in the foreground")
    submit = sub.add_parser("submit", parents=[common], help="submit a download job")
    submit.add_argument("url")
    submit.add_argument("--id", help="correlation id (default: generated)")
    submit.add_argument("--filename", help="file name to publish as")
    submit.add_argument("--sha256", help="expected sha256 of the file")
    submit.add_argument("--output-dir", help="folder inside the output root")
    submit.add_argument("--downloader", choices=("auto", "http", "ytdlp"), default=None)
    submit.add_argument("--format", help="yt-dlp format selector")
    submit.add_argument("--priority", type=int, default=None)
    submit.add_argument("--wait", action="store_true", help="wait for the job to finish")
    submit.add_argument("--timeout", type=float, default=None, help="with --wait: give up after N seconds")
    cancel = sub.add_parser("cancel", parents=[common], help="cancel a queued or running job")
    cancel.add_argument("id")
    status = sub.add_parser("status", parents=[common], help="show the daemon's live status")
    status.add_argument("--watch", action="store_true", help="refresh every second until Ctrl-C")
    events = sub.add_parser("events", parents=[common], help="show the event log, filtered")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events (survives logrotate)")
    events.add_argument("--job", metavar="ID", help="only this job's events")
    events.add_argument("--event", metavar="PATTERN", help="only events matching PATTERN, e.g. 'job.*'")
    events.add_argument("--since", metavar="WHEN", help="only events newer than 10m, 2h, or an ISO time")
    events.add_argument("--json", action="store_true", help="print raw JSON lines (for jq)")
    show = sub.add_parser("show", parents=[common], help="everything known about one job")
    show.add_argument("id")
    retry = sub.add_parser("retry", parents=[common], help="resubmit a failed job as a new one")
    retry.add_argument("id")
    reap = sub.add_parser("reap", parents=[common], help="remove stale temp dirs once")
    reap.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    verify = sub.add_parser("verify", parents=[common], help="check the spool's invariants (nothing lost)")
    verify.add_argument("--running", action="store_true", help="the daemon is running: skip idle-only checks")
    check = sub.add_parser("check-config", parents=[common], help="validate the config and print it")
    check.add_argument("--reference", action="store_true", help="print the config reference (Markdown)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        handler = globals()[f"_cmd_{args.command.replace('-', '_')}"]
        return int(handler(args, settings))
    except ConfigError as exc:
        print(f"videonote-dl: config error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except UsageError as exc:
        print(f"videonote-dl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except PermissionError as exc:
        print(f"videonote-dl: permission denied: {exc.filename or exc}; reading the event log and status "
              "needs root or the daemon's group (see docs/operations.md)", file=sys.stderr)
        return EXIT_FAILURE


def _cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.events import configure_events
    from daemon.service import run_daemon

    try:
        configure_events(settings.event_log, settings.log_level)
    except OSError as exc:
        print(f"videonote-dl: cannot open event log {settings.event_log}: {exc.strerror}; "
              "fix event_log in the config or the folder's permissions", file=sys.stderr)
        return EXIT_FAILURE
    return run_daemon(settings)


def _write_into_spool(settings: Settings, folder: str, name: str, data: bytes) -> Path:
    """Escribe en spool/tmp/ y entrega con rename() (la entrega es el rename)."""
    tmp_dir = settings.spool_dir / "tmp"
    target_dir = settings.spool_dir / folder
    if not target_dir.is_dir():
        raise UsageError(f"spool folder {target_dir} does not exist; start the daemon once (make run) "
                         "or check spool_dir in the config")
    tmp = tmp_dir / f".{name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
    except PermissionError:
        raise UsageError(f"cannot write into {tmp_dir}: permission denied; producers must be in the spool's "
                         "group (see docs/operations.md)") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, 0o640)  # legible por el daemon (grupo) aunque el umask del productor sea 077
        handle.write(data)
        handle.flush()
        os.fsync(fd)
    target = target_dir / name
    if target.exists():
        tmp.unlink()
        raise UsageError(f"{target} already exists; choose another --id")
    os.rename(tmp, target)
    # La entrega es durable (sobrevive a un corte de luz) con el fsync de la carpeta destino.
    fsync_dir(target_dir)
    return target


def _cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    try:
        job_id = validate_correlation_id(args.id) if args.id else new_correlation_id()
    except InvalidCorrelationId as exc:
        raise UsageError(str(exc)) from None
    job: dict[str, Any] = {"url": args.url, "id": job_id}
    for key in ("filename", "sha256", "output_dir", "downloader", "format", "priority"):
        value = getattr(args, key)
        if value is not None:
            job[key] = value
    from daemon.jobs import JobLimits, JobRejected, parse_job

    data = yaml.safe_dump(job, sort_keys=False).encode("utf-8")
    d = settings.download
    try:
        parse_job(data, f"{job_id}.yaml", JobLimits(d.allowed_schemes, d.max_bytes, settings.ytdlp.enabled))
    except JobRejected as exc:
        raise UsageError(f"the job would be rejected: {exc.reason}") from None
    _write_into_spool(settings, "incoming", f"{job_id}.yaml", data)
    print(job_id, flush=True)
    if not args.wait:
        return EXIT_OK
    from daemon.progress_view import wait_for_job

    return wait_for_job(settings.spool_dir, settings.event_log, job_id, args.timeout)


def _cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    try:
        job_id = validate_correlation_id(args.id)
    except InvalidCorrelationId as exc:
        raise UsageError(str(exc)) from None
    for folder in ("done", "failed"):
        if (settings.spool_dir / folder / f"{job_id}.json").exists():
            print(f"job {job_id} already finished (see {settings.spool_dir / folder / (job_id + '.json')})",
                  file=sys.stderr)
            return EXIT_FAILURE
    if not (settings.spool_dir / "cancel" / job_id).exists():
        _write_into_spool(settings, "cancel", job_id, b"")
    print(f"cancel requested for {job_id}")
    return EXIT_OK


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


def _print_status(settings: Settings) -> int:
    from daemon.status import read_status

    status = read_status(settings.status_file)
    if status is None:
        print(f"daemon not running: no status file at {settings.status_file} (start it with `make run` "
              "or `systemctl start videonote-dl`)", file=sys.stderr)
        return EXIT_FAILURE
    alive = _daemon_alive(status)
    counts = status.get("counts", {})
    print(f"daemon: {'running' if alive else 'NOT running'} (pid {status.get('pid')}, "
          f"up {format_duration(status.get('uptime_s', 0))}, last update {status.get('updated_at')}, "
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
    return EXIT_OK if alive else EXIT_FAILURE


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

    return cmd_show(settings, args.id)


def _cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.cli_inspect import cmd_retry

    return cmd_retry(settings, args.id, _write_into_spool)


def _cmd_reap(args: argparse.Namespace, settings: Settings) -> int:
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
          f"{format_duration(settings.reaper.max_age)}; {report.errors} error(s)")
    return EXIT_FAILURE if report.errors else EXIT_OK


def _cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.verify import verify_spool

    report = verify_spool(settings, daemon_stopped=not args.running)
    for problem in report.problems:
        print(f"PROBLEM {problem}")
    print(f"{'OK' if report.ok else 'FAILED'}: {report.jobs} jobs, {report.published} published files checked, "
          f"{report.events} events read, {len(report.problems)} problem(s)")
    return EXIT_OK if report.ok else EXIT_FAILURE


def _cmd_check_config(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.config import SCHEMA

    if args.reference:
        from daemon.config_reference import render_config_reference

        sys.stdout.write(render_config_reference())
        return EXIT_OK
    print(f"config OK: {settings.source or '(built-in defaults)'}")
    for spec in SCHEMA:
        value: Any = settings
        for part in spec.key.split("."):
            value = getattr(value, part)
        print(f"  {spec.key} = {value}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
