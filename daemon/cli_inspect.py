"""Órdenes para averiguar qué pasó: ``events``, ``show ID`` y ``retry ID``."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import yaml

from daemon.config import Settings, config_label
from daemon.error_kinds import ERROR_KINDS, fix_hint
from daemon.event_reader import EventFilter, format_event, read_events
from daemon.exit_codes import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_PERMISSION
from daemon.permissions import permission_message
from daemon.progress_view import find_outcome
from daemon.units import format_size, parse_duration

__all__ = ["FIX_HINTS", "cmd_events", "cmd_retry", "cmd_show", "parse_since"]

# Qué hacer ante cada clase de error (la clave es ``error.kind`` del registro): sale de la lista
# cerrada de daemon/error_kinds.py, así que cada tipo tiene su pista.
FIX_HINTS: dict[str, str] = {name: kind.fix for name, kind in ERROR_KINDS.items()}


def parse_since(value: str | None) -> datetime | None:
    """``10m`` / ``2h`` (hace cuánto) o una fecha ISO 8601 (UTC)."""
    if value is None:
        return None
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since {value!r}: use a duration like 10m or 2h, or an ISO time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def cmd_events(settings: Settings, job: str | None, pattern: str | None, since: str | None, follow: bool,
               as_json: bool) -> int:
    flt = EventFilter(job=job, pattern=pattern, since=parse_since(since))
    try:
        if not follow:
            # open() nombra el problema exacto: ausente (3) o sin permiso (4).
            settings.event_log.open("rb").close()
    except FileNotFoundError:
        print(f"no event log at {settings.event_log} yet ({config_label(settings)}); has the daemon run with "
              "this config?", file=sys.stderr)
        return EXIT_NOT_FOUND
    except PermissionError:
        print(f"videonote-dl: {_events_denied(settings)}", file=sys.stderr)
        return EXIT_PERMISSION
    color = sys.stdout.isatty()
    try:
        for line, event in read_events(settings.event_log, flt, follow=follow):
            if as_json:
                sys.stdout.buffer.write(line + b"\n")
            else:
                sys.stdout.write(format_event(event, color) + "\n")
            sys.stdout.flush()
    except PermissionError:
        print(f"videonote-dl: {_events_denied(settings)}", file=sys.stderr)
        return EXIT_PERMISSION
    return EXIT_OK


def _events_denied(settings: Settings) -> str:
    return permission_message(settings.event_log, "read the event log", config_label(settings))


def _job_events(settings: Settings, job_id: str) -> list[dict[str, Any]] | None:
    """Los eventos del trabajo; None si el registro no se puede leer (sin permiso)."""
    try:
        return [event for _line, event in read_events(settings.event_log, EventFilter(job=job_id))]
    except PermissionError:
        return None


def cmd_show(settings: Settings, job_id: str) -> int:
    try:
        outcome = find_outcome(settings.spool_dir, job_id)
    except PermissionError as exc:
        print("videonote-dl: " + permission_message(exc.filename or settings.spool_dir, "read the job's record",
                                                    config_label(settings)), file=sys.stderr)
        return EXIT_PERMISSION
    events = _job_events(settings, job_id)
    if outcome is None and events is None:
        print(f"no record of job {job_id!r} in {settings.spool_dir}/done or failed, and its events cannot be "
              f"read: {_events_denied(settings)}", file=sys.stderr)
        return EXIT_PERMISSION
    if outcome is None and not events:
        print(f"no job {job_id!r}: no record in {settings.spool_dir}/done or failed and no events "
              f"in {settings.event_log} ({config_label(settings)})", file=sys.stderr)
        return EXIT_NOT_FOUND
    if outcome is None:
        print(f"job {job_id}: not finished yet (queued or running; `videonote-dl status` shows progress)")
    else:
        folder, data = outcome
        print(f"job {job_id}: {data.get('outcome', folder)}")
        if folder == "rejected":
            print(f"  rejected: {data.get('reason')}")
        if data.get("path"):
            renamed = " (renamed: the name was taken)" if data.get("renamed") else ""
            print(f"  file:     {data['path']}{renamed}")
            print(f"  size:     {format_size(data.get('size') or 0)}   sha256 {data.get('sha256')}")
        if data.get("job"):
            print(f"  url:      {data['job'].get('url')}")
        for key, label in (("submitter", "submitter"), ("cancelled_by", "cancelled by")):
            if isinstance(data.get(key), int) and data[key] >= 0:
                print(f"  {label + ':':<9} {user_label(data[key])}")
        if data.get("attempts") is not None:
            print(f"  attempts: {data['attempts']}   duration {data.get('timings', {}).get('duration_s')}s")
        error = data.get("error")
        if error:
            print(f"  error:    {error.get('message')} (kind {error.get('kind')})")
            print(f"  to fix:   {fix_hint(str(error.get('kind')))}")
            if folder == "failed":
                print(f"  retry:    videonote-dl retry {job_id}")
        if folder != "rejected":
            print(f"  record:   {settings.spool_dir / folder / (job_id + '.json')}")
    if events is None:
        # Un productor lee los registros pero no el registro de eventos: no es un error de ``show``.
        print("events:   not shown: you cannot read the event log (the note on stderr says how to)")
        print(f"note: {_events_denied(settings)}", file=sys.stderr)
    elif events:
        print(f"events ({len(events)}):")
        for event in events:
            print("  " + format_event(event))
    return EXIT_OK


def user_label(uid: int) -> str:
    """``alice (uid 1001)``, o sólo el uid si no tiene nombre."""
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def cmd_retry(settings: Settings, job_id: str, submit: Any) -> int:
    """Vuelve a enviar un trabajo fallido como uno nuevo (``<id>-rN``); el historial se conserva."""
    record_path = settings.spool_dir / "failed" / f"{job_id}.json"
    if not record_path.exists():
        done = settings.spool_dir / "done" / f"{job_id}.json"
        if done.exists():
            print(f"cannot retry {job_id}: it succeeded ({done}); to download it again, submit it with a new id",
                  file=sys.stderr)
            return EXIT_FAILED
        print(f"cannot retry {job_id}: no failed record {record_path} ({config_label(settings)}); "
              "`videonote-dl show ID` tells where a job is", file=sys.stderr)
        return EXIT_NOT_FOUND
    record = orjson.loads(record_path.read_bytes())
    job = dict(record.get("job") or {})
    if "***@" in str(job.get("url", "")):
        print(f"cannot retry {job_id}: its URL had credentials, which are never stored; submit it again "
              "with `videonote-dl submit URL`", file=sys.stderr)
        return EXIT_FAILED
    if "headers" in job:
        print(f"cannot retry {job_id}: it had request headers, whose values are never stored; submit it again",
              file=sys.stderr)
        return EXIT_FAILED
    base = job_id[:58]
    n = 1
    while find_outcome(settings.spool_dir, f"{base}-r{n}") is not None or _in_spool(settings.spool_dir, f"{base}-r{n}"):
        n += 1
    new_id = f"{base}-r{n}"
    job["id"] = new_id
    data = yaml.safe_dump(job, sort_keys=False).encode()
    from daemon.submit import incoming_name

    submit(settings, "incoming", incoming_name(new_id), data)
    print(new_id)
    print(f"resubmitted {job_id} as {new_id}", file=sys.stderr)
    return EXIT_OK


def _in_spool(spool: Path, job_id: str) -> bool:
    return (spool / "incoming" / f"{job_id}.yaml").exists() or any((spool / "active").glob(f"*/{job_id}.yaml"))
