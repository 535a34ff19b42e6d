"""Autoprueba del plan: demuestra el aislamiento y la limpieza de los directorios de descarga.

Se ejecuta con ``python daemon/downloaders/download_lifecycle.py``, con
``python -m daemon.downloaders.selftest`` o llamando a ``run_self_test()``. Imprime una línea
legible por comprobación (PASS/FAIL) y devuelve 0 si todas pasan, 1 si alguna falla. Trabaja en
una raíz temporal propia (``tempfile.mkdtemp``) que borra al terminar, y escribe sus eventos en
un registro desechable dentro de ella.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import stat
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from daemon.dirlock import is_dir_locked
from daemon.downloaders.base import DownloadOptions, DownloadResult, PermanentDownloadError, ProgressCallback
from daemon.downloaders.download_lifecycle import (
    DownloadLifecycle,
    IsolatedDownload,
    LifecycleState,
    cleanup_download,
)
from daemon.events import configure_events
from daemon.ids import InvalidCorrelationId
from daemon.temp_manager import DOWNLOAD_DIR_PREFIX, TempManager

__all__ = ["SelfTestFailure", "run_self_test"]

_PAYLOAD = b"videonote-dl self-test payload\n" * 64


class SelfTestFailure(Exception):
    """Una comprobación de la autoprueba no se cumplió (no se usa ``assert``: ``-O`` lo quitaría)."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SelfTestFailure(message)


async def _write_payload(options: DownloadOptions, progress: ProgressCallback | None) -> DownloadResult:
    """Descarga simulada: escribe el archivo dentro de ``options.output_path`` (el directorio aislado)."""
    _check(options.output_path is not None, "DownloadLifecycle did not set options.output_path")
    assert options.output_path is not None  # para el comprobador de tipos
    target = options.output_path / (options.filename or "payload.bin")
    target.write_bytes(_PAYLOAD)
    if progress is not None:
        progress(len(_PAYLOAD), len(_PAYLOAD))
    await asyncio.sleep(0)
    return DownloadResult(path=target, filename=target.name, size=len(_PAYLOAD),
                          sha256=hashlib.sha256(_PAYLOAD).hexdigest())


class _SelfTest:
    """Las comprobaciones; cada una usa ids propios dentro de la raíz temporal ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, correlation_id: str) -> Path:
        return self.root / f"{DOWNLOAD_DIR_PREFIX}{correlation_id}"

    # --- IsolatedDownload ----------------------------------------------------------------
    def isolated_success(self) -> str:
        with IsolatedDownload("st-success", self.root) as path:
            _check(path == self._dir("st-success"), f"unexpected dir {path}")
            _check(path.is_dir(), "dir missing inside the context")
            mode = stat.S_IMODE(path.stat().st_mode)
            _check(mode == 0o700, f"dir mode is {mode:o}, expected 700")
            _check(is_dir_locked(path), "dir not locked (flock) while in use")
            (path / "part.bin").write_bytes(_PAYLOAD)
        _check(not path.exists(), "dir still present after the context")
        return f"{path.name} existed (0700, locked) inside the context and is gone after"

    def isolated_exception(self) -> str:
        path = self._dir("st-exception")
        try:
            with IsolatedDownload("st-exception", self.root) as inside:
                (inside / "part.bin").write_bytes(_PAYLOAD)
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        else:
            raise SelfTestFailure("the exception was swallowed")
        _check(not path.exists(), "dir left behind after an exception")
        return "RuntimeError inside the context: re-raised, dir removed"

    # --- DownloadLifecycle ---------------------------------------------------------------
    def lifecycle_success(self) -> str:
        options = DownloadOptions(url="https://example.org/clip.mp4", filename="clip.mp4")
        lifecycle = DownloadLifecycle("st-life-ok", options, base_temp_dir=self.root)
        seen: list[int] = []
        result = asyncio.run(lifecycle.execute(_write_payload, lambda done, _total: seen.append(done)))
        _check(options.output_path == self._dir("st-life-ok"), f"output_path was {options.output_path}")
        _check(result.path.parent == self._dir("st-life-ok"), "the file was written outside the isolated dir")
        _check(result.size == len(_PAYLOAD), f"size {result.size}")
        _check(seen == [len(_PAYLOAD)], "progress callback not passed through")
        _check(lifecycle.state is LifecycleState.SUCCEEDED, f"state {lifecycle.state}")
        _check(not self._dir("st-life-ok").exists(), "dir left behind after success")
        return "execute() wrote inside videonote_dl_st-life-ok, state succeeded, dir removed"

    def lifecycle_failure(self) -> str:
        async def fail(options: DownloadOptions, _progress: ProgressCallback | None) -> DownloadResult:
            assert options.output_path is not None
            (options.output_path / "partial.bin").write_bytes(b"half")
            raise PermanentDownloadError("HTTP 404 from origin")

        lifecycle = DownloadLifecycle("st-life-fail", DownloadOptions(url="https://example.org/x"),
                                      base_temp_dir=self.root)
        try:
            asyncio.run(lifecycle.execute(fail))
        except PermanentDownloadError:
            pass
        else:
            raise SelfTestFailure("DownloadError not re-raised")
        _check(lifecycle.state is LifecycleState.FAILED, f"state {lifecycle.state}")
        _check(lifecycle.record.error is not None and lifecycle.record.error["kind"] == "permanent",
               f"error record {lifecycle.record.error}")
        _check(not self._dir("st-life-fail").exists(), "dir left behind after a DownloadError")
        return "DownloadError: re-raised, state failed with the error recorded, dir removed"

    def lifecycle_exception(self) -> str:
        async def crash(_options: DownloadOptions, _progress: ProgressCallback | None) -> DownloadResult:
            raise ValueError("bug in a downloader")

        lifecycle = DownloadLifecycle("st-life-exc", DownloadOptions(url="https://example.org/x"),
                                      base_temp_dir=self.root)
        try:
            asyncio.run(lifecycle.execute(crash))
        except ValueError:
            pass
        else:
            raise SelfTestFailure("ValueError not re-raised")
        _check(lifecycle.state is LifecycleState.FAILED, f"state {lifecycle.state}")
        _check(not self._dir("st-life-exc").exists(), "dir left behind after an exception")
        return "unexpected exception: re-raised, state failed, dir removed"

    def lifecycle_cancel(self) -> str:
        path = self._dir("st-cancel")
        observed: dict[str, bool] = {}

        async def scenario() -> None:
            started = asyncio.Event()

            async def slow(options: DownloadOptions, _progress: ProgressCallback | None) -> DownloadResult:
                assert options.output_path is not None
                (options.output_path / "partial.bin").write_bytes(b"half")
                started.set()
                await asyncio.Event().wait()  # nunca termina sola: sólo la cancelación la saca
                raise SelfTestFailure("unreachable")

            lifecycle = DownloadLifecycle("st-cancel", DownloadOptions(url="https://example.org/x"),
                                          base_temp_dir=self.root)
            task = asyncio.create_task(lifecycle.execute(slow))
            await started.wait()
            observed["inside"] = path.is_dir()
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                observed["cancelled"] = True
            observed["state_ok"] = lifecycle.state is LifecycleState.CANCELLED

        asyncio.run(scenario())
        _check(observed.get("inside", False), "dir missing while the download ran")
        _check(observed.get("cancelled", False), "CancelledError not re-raised")
        _check(observed.get("state_ok", False), "state is not cancelled")
        _check(not path.exists(), "dir left behind after cancellation")
        return "asyncio task cancelled mid-download: CancelledError re-raised, dir removed"

    def keep_on_success(self) -> str:
        lifecycle = DownloadLifecycle("st-keep", DownloadOptions(url="https://example.org/x"),
                                      cleanup_on_success=False, base_temp_dir=self.root)
        result = asyncio.run(lifecycle.execute(_write_payload))
        _check(result.path.is_file(), "cleanup_on_success=False did not keep the file")
        _check(not is_dir_locked(self._dir("st-keep")), "kept dir is still locked")
        _check(cleanup_download("st-keep", self.root), "cleanup_download did not find the kept dir")
        _check(not self._dir("st-keep").exists(), "cleanup_download left the dir")
        return "cleanup_on_success=False kept the dir (unlocked); cleanup_download removed it"

    # --- ids de correlación --------------------------------------------------------------
    def correlation_naming(self) -> str:
        path = TempManager.get_download_temp_dir("abc123", self.root)
        _check(path.name == "videonote_dl_abc123", f"name {path.name}")
        _check(path.parent == self.root, "created outside the temp root")
        manager = TempManager(correlation_id="abc123", base_dir=self.root)
        own = manager.temp_dir
        _check(own.name.startswith("videonote_abc123_"), f"instance dir name {own.name}")
        manager.cleanup()
        _check(not own.exists(), "TempManager.cleanup left its dir")
        _check(TempManager.cleanup_by_correlation_id("abc123", self.root), "cleanup_by_correlation_id failed")
        return "videonote_dl_<id> for downloads, videonote_<id>_<random> for TempManager instances"

    def exact_match_cleanup(self) -> str:
        short = TempManager.get_download_temp_dir("abc", self.root)
        longer = TempManager.get_download_temp_dir("abcdef", self.root)
        (longer / "keep.bin").write_bytes(_PAYLOAD)
        _check(cleanup_download("abc", self.root), "cleaning 'abc' found nothing")
        _check(not short.exists(), "videonote_dl_abc still there")
        _check((longer / "keep.bin").is_file(), "cleaning 'abc' touched videonote_dl_abcdef")
        _check(not cleanup_download("abc", self.root), "a second clean-up of 'abc' reported True")
        cleanup_download("abcdef", self.root)
        return "cleaning 'abc' removed only videonote_dl_abc, never videonote_dl_abcdef"

    def listing(self) -> str:
        for cid in ("list-b", "list-a"):
            TempManager.get_download_temp_dir(cid, self.root)
        (self.root / "videonote_dl_not-a-dir").write_bytes(b"")
        listed = TempManager.list_active_downloads(self.root)
        _check(listed == ["list-a", "list-b"], f"list_active_downloads returned {listed}")
        for cid in ("list-a", "list-b"):
            cleanup_download(cid, self.root)
        (self.root / "videonote_dl_not-a-dir").unlink()
        _check(TempManager.list_active_downloads(self.root) == [], "listing not empty after clean-up")
        return "list_active_downloads() lists exactly the videonote_dl_* dirs present"

    def bad_ids(self) -> str:
        accepted = []
        for bad in ("../x", "a/b", "", "x" * 65, "abc\n"):
            try:
                IsolatedDownload(bad, self.root)
            except InvalidCorrelationId:
                continue
            accepted.append(bad)
        _check(not accepted, f"bad ids accepted: {accepted}")
        try:
            cleanup_download("../" + self.root.name, self.root.parent)
        except InvalidCorrelationId:
            pass
        else:
            raise SelfTestFailure("cleanup_download accepted a path as id")
        with IsolatedDownload("st-paths", self.root) as path:
            for bad_name in ("../x", "/etc/x"):
                try:
                    IsolatedDownload("st-paths", self.root).get_path(bad_name)
                except ValueError:
                    continue
                raise SelfTestFailure(f"get_path accepted {bad_name!r}")
            _check(path.exists(), "dir vanished")
        _check(self.root.is_dir(), "the temp root itself was touched")
        return "bad ids ('../x', 'a/b', '', 65 chars) and paths in get_path refused"

    def event_log(self, log_path: Path) -> str:
        lines = log_path.read_text(encoding="utf-8").splitlines()
        names = set()
        for line in lines:
            event = json.loads(line)
            _check(list(event)[:3] == ["ts", "level", "event"], f"bad event line {line[:120]}")
            names.add(event["event"])
        wanted = {"tempdir.created", "tempdir.removed", "job.started", "job.succeeded", "job.failed",
                  "job.cancelled"}
        _check(wanted <= names, f"events missing from the log: {sorted(wanted - names)}")
        return f"{len(lines)} event lines, all JSON with ts/level/event"

    def nothing_left(self) -> str:
        left = sorted(p.name for p in self.root.iterdir())
        _check(not left, f"entries left in the temp root: {left}")
        return "the temp root is empty: every check cleaned up after itself"


def run_self_test(out: TextIO | None = None) -> int:
    """Corre la autoprueba; una línea PASS/FAIL por comprobación. Devuelve 0 si todo pasa.

    Reconfigura los eventos del proceso (a un registro desechable, y al final a ninguno): es
    para ejecutarla como script, no dentro del daemon.
    """
    stream = out or sys.stdout
    base = Path(tempfile.mkdtemp(prefix="vndl-selftest-"))
    root = base / "tmp"
    root.mkdir(mode=0o700)
    log_path = base / "events.jsonl"
    configure_events(log_path, level="debug", stderr=False)
    test = _SelfTest(root)
    checks: list[tuple[str, Callable[[], str]]] = [
        ("isolation on success", test.isolated_success),
        ("isolation on exception", test.isolated_exception),
        ("lifecycle success", test.lifecycle_success),
        ("lifecycle failure (DownloadError)", test.lifecycle_failure),
        ("lifecycle exception", test.lifecycle_exception),
        ("lifecycle cancellation", test.lifecycle_cancel),
        ("cleanup_on_success=False", test.keep_on_success),
        ("correlation-id naming", test.correlation_naming),
        ("exact-match cleanup", test.exact_match_cleanup),
        ("list_active_downloads", test.listing),
        ("bad ids refused", test.bad_ids),
        ("event log", lambda: test.event_log(log_path)),
        ("nothing left behind", test.nothing_left),
    ]
    stream.write(f"videonote-dl self-test (temp root {root})\n")
    failed = 0
    try:
        for title, check in checks:
            try:
                detail = check()
            except Exception as exc:  # una comprobación que falla no detiene las demás
                failed += 1
                where = traceback.extract_tb(exc.__traceback__)[-1]
                stream.write(f"FAIL  {title}: {type(exc).__name__}: {exc} (line {where.lineno})\n")
            else:
                stream.write(f"PASS  {title}: {detail}\n")
    finally:
        configure_events(None, stderr=False)
        shutil.rmtree(base, ignore_errors=True)
    passed = len(checks) - failed
    stream.write(f"{passed}/{len(checks)} checks passed{'' if failed else '; temp root removed'}\n")
    stream.flush()
    return 0 if failed == 0 else 1


if __name__ == "__main__":  # pragma: no cover - también vía runpy desde download_lifecycle.py
    sys.exit(run_self_test())
