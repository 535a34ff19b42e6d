"""Órdenes para averiguar qué pasó: ``events``, ``show ID`` y ``retry ID``."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import yaml

from daemon.config import Settings
from daemon.error_kinds import ERROR_KINDS, fix_hint
from daemon.event_reader import EventFilter, format_event, read_events
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
    if not settings.event_log.exists() and not follow:
        print(f"no event log at {settings.event_log} yet (has the daemon run with this config?)", file=sys.stderr)
        return 1
    color = sys.stdout.isatty()
    try:
        for line, event in read_events(settings.event_log, flt, follow=follow):
            if as_json:
                sys.stdout.buffer.write(line + b"\n")
            else:
                sys.stdout.write(format_event(event, color) + "\n")
            sys.stdout.flush()
    except BrokenPipeError:
        return 0
    return 0


def _job_events(settings: Settings, job_id: str) -> list[dict[str, Any]]:
    return [event for _line, event in read_events(settings.event_log, EventFilter(job=job_id))]


def cmd_show(settings: Settings, job_id: str) -> int:
    outcome = find_outcome(settings.spool_dir, job_id)
    events = _job_events(settings, job_id)
    if outcome is None and not events:
        print(f"no job {job_id!r}: no record in {settings.spool_dir}/done or failed and no events "
              f"in {settings.event_log}", file=sys.stderr)
        return 1
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
        if data.get("attempts") is not None:
            print(f"  attempts: {data['attempts']}   duration {data.get('timings', {}).get('duration_s')}s")
        error = data.get("error")
        if error:
            print(f"  error:    {error.get('message')} (kind {error.get('kind')})")
            print(f"  to fix:   {fix_hint(str(error.get('kind')))}")
            if folder == "failed":
                print(f"  retry:    videonote-dl retry {job_id}")
        print(f"  record:   {settings.spool_dir / folder / (job_id + '.json')}" if folder != "rejected" else "")
    if events:
        print(f"events ({len(events)}):")
        for event in events:
            print("  " + format_event(event))
    return 0


def cmd_retry(settings: Settings, job_id: str, submit: Any) -> int:
    """Vuelve a enviar un trabajo fallido como uno nuevo (``<id>-rN``); el historial se conserva."""
    record_path = settings.spool_dir / "failed" / f"{job_id}.json"
    if not record_path.exists():
        done = settings.spool_dir / "done" / f"{job_id}.json"
        why = "it succeeded" if done.exists() else "there is no failed record for it"
        print(f"cannot retry {job_id}: {why} ({record_path})", file=sys.stderr)
        return 1
    record = orjson.loads(record_path.read_bytes())
    job = dict(record.get("job") or {})
    if "***@" in str(job.get("url", "")):
        print(f"cannot retry {job_id}: its URL had credentials, which are never stored; submit it again "
              "with `videonote-dl submit URL`", file=sys.stderr)
        return 1
    if "headers" in job:
        print(f"cannot retry {job_id}: it had request headers, whose values are never stored; submit it again",
              file=sys.stderr)
        return 1
    base = job_id[:58]
    n = 1
    while find_outcome(settings.spool_dir, f"{base}-r{n}") is not None or _in_spool(settings.spool_dir, f"{base}-r{n}"):
        n += 1
    new_id = f"{base}-r{n}"
    job["id"] = new_id
    data = yaml.safe_dump(job, sort_keys=False).encode()
    submit(settings, "incoming", f"{new_id}.yaml", data)
    print(new_id)
    print(f"resubmitted {job_id} as {new_id}", file=sys.stderr)
    return 0


def _in_spool(spool: Path, job_id: str) -> bool:
    return (spool / "incoming" / f"{job_id}.yaml").exists() or any((spool / "active").glob(f"*/{job_id}.yaml"))
