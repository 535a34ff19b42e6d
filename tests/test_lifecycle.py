"""IsolatedDownload y DownloadLifecycle: el directorio existe dentro y desaparece después, pase lo que pase."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from daemon.dirlock import DirLockBusy, is_dir_locked
from daemon.downloaders import (
    DownloadError,
    DownloadLifecycle,
    DownloadOptions,
    DownloadResult,
    IsolatedDownload,
    LifecycleState,
    PermanentDownloadError,
    ProgressCallback,
    ServerError,
    cleanup_download,
)
from daemon.downloaders.download_lifecycle import safe_filename_in
from daemon.reaper import reap_temp_root
from tests.conftest import EventLog

PAYLOAD = b"0123456789abcdef" * 1024


def _options() -> DownloadOptions:
    return DownloadOptions(url="https://example.org/clip.mp4", filename="clip.mp4")


async def write_payload(options: DownloadOptions, progress: ProgressCallback | None) -> DownloadResult:
    """Descarga de prueba: escribe en el directorio aislado, informa progreso y devuelve el resultado."""
    assert options.output_path is not None
    target = options.output_path / (options.filename or "out.bin")
    target.write_bytes(PAYLOAD)
    if progress is not None:
        progress(len(PAYLOAD) // 2, len(PAYLOAD))
        progress(len(PAYLOAD), len(PAYLOAD))
    await asyncio.sleep(0)
    return DownloadResult(path=target, filename=target.name, size=len(PAYLOAD),
                          sha256=hashlib.sha256(PAYLOAD).hexdigest())


# --- IsolatedDownload ---------------------------------------------------------------------
def test_isolated_dir_exists_inside_and_is_gone_after(temp_root: Path, event_log: EventLog) -> None:
    with IsolatedDownload("iso-ok") as path:
        assert path == temp_root / "videonote_dl_iso-ok"
        assert path.is_dir()
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        assert is_dir_locked(path)
        (path / "clip.mp4").write_bytes(PAYLOAD)
    assert not path.exists()
    assert event_log.names() == ["tempdir.created", "tempdir.removed"]
    created, removed = event_log.read()
    assert created["correlation_id"] == removed["correlation_id"] == "iso-ok"
    assert created["reused"] is False
    assert created["temp_dir"] == str(path)


def test_isolated_dir_is_gone_after_an_exception(temp_root: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), IsolatedDownload("iso-exc") as path:
        (path / "partial").write_bytes(b"half")
        raise RuntimeError("boom")
    assert not path.exists()


def test_isolated_dir_is_gone_after_a_download_error(temp_root: Path) -> None:
    with pytest.raises(PermanentDownloadError), IsolatedDownload("iso-fail") as path:
        (path / "partial").write_bytes(b"half")
        raise PermanentDownloadError("HTTP 404")
    assert not path.exists()


def test_isolated_dir_is_gone_after_keyboard_interrupt(temp_root: Path) -> None:
    with pytest.raises(KeyboardInterrupt), IsolatedDownload("iso-kbd") as path:
        (path / "partial").write_bytes(b"half")
        raise KeyboardInterrupt
    assert not path.exists()


def test_isolated_dir_is_gone_after_a_real_sigint(temp_root: Path) -> None:
    # SIGINT real con el manejador por defecto de Python: KeyboardInterrupt dentro del bloque.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt), IsolatedDownload("iso-sigint") as path:
        (path / "partial").write_bytes(b"half")
        signal.raise_signal(signal.SIGINT)
        pytest.fail("SIGINT did not interrupt")
    assert not path.exists()


def test_keep_leaves_the_dir_unlocked(temp_root: Path, event_log: EventLog) -> None:
    isolated = IsolatedDownload("iso-keep")
    with isolated as path:
        (path / "part").write_bytes(b"half")
        isolated.keep()
    assert (path / "part").read_bytes() == b"half"
    assert not is_dir_locked(path)
    assert event_log.named("tempdir.kept")[0]["correlation_id"] == "iso-keep"
    assert isolated.cleanup() is True
    assert not path.exists()


def test_reentering_reuses_the_dir_and_says_so(temp_root: Path, event_log: EventLog) -> None:
    first = IsolatedDownload("iso-resume")
    with first as path:
        (path / "part").write_bytes(b"first half")
        first.keep()
    with IsolatedDownload("iso-resume") as again:
        assert again == path
        assert (again / "part").read_bytes() == b"first half"
    assert [e["reused"] for e in event_log.named("tempdir.created")] == [False, True]


def test_a_second_user_of_the_same_id_is_refused_while_the_first_lives(temp_root: Path) -> None:
    with IsolatedDownload("iso-busy") as path:
        with pytest.raises(DirLockBusy):
            IsolatedDownload("iso-busy").__enter__()
        assert path.is_dir()  # el intento fallido no borró el directorio del otro
    assert not path.exists()


def test_get_path_accepts_only_bare_names(temp_root: Path) -> None:
    isolated = IsolatedDownload("iso-names")
    with isolated as path:
        assert isolated.get_path("clip.mp4") == path / "clip.mp4"
        assert isolated.get_path("..hidden") == path / "..hidden"
        for bad in ("../x", "/etc/x", "a/b", "", ".", "..", "a\\b", "a\x00b"):
            with pytest.raises(ValueError, match="bare file name"):
                isolated.get_path(bad)


def test_safe_filename_in_refuses_non_strings(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        safe_filename_in(tmp_path, None)  # type: ignore[arg-type]


def test_base_temp_dir_argument(tmp_path: Path) -> None:
    base = tmp_path / "explicit"
    with IsolatedDownload("iso-base", base_temp_dir=base) as path:
        assert path == base / "videonote_dl_iso-base"
    assert not path.exists()


def test_cleanup_when_the_dir_is_already_gone_is_false(temp_root: Path) -> None:
    isolated = IsolatedDownload("iso-gone")
    with isolated as path:
        cleanup_download("iso-gone")
        assert not path.exists()
    assert isolated.cleanup() is False


def test_cleanup_failure_is_an_event_not_an_exception(temp_root: Path, event_log: EventLog) -> None:
    # Un archivo inmutable (chattr +i) no se puede borrar, ni siquiera como root.
    isolated = IsolatedDownload("iso-stuck")
    path = isolated.__enter__()
    stuck = path / "stuck.bin"
    stuck.write_bytes(b"x")
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode != 0:
        isolated.cleanup()
        pytest.skip("chattr +i is not available on this file system")
    try:
        assert isolated.cleanup() is False
        assert path.is_dir()
        (failed,) = event_log.named("tempdir.cleanup_failed")
        assert failed["correlation_id"] == "iso-stuck"
        assert failed["error"]
        assert not is_dir_locked(path)  # el cerrojo se soltó igualmente
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert cleanup_download("iso-stuck") is True


# --- DownloadLifecycle: éxito ----------------------------------------------------------------
def test_execute_success_runs_inside_the_dir_and_removes_it(temp_root: Path, event_log: EventLog) -> None:
    options = _options()
    lifecycle = DownloadLifecycle("life-ok", options)
    seen: list[tuple[bool, bool]] = []
    progress: list[tuple[int, int | None]] = []

    async def download(opts: DownloadOptions, cb: ProgressCallback | None) -> DownloadResult:
        assert opts is options
        assert opts.output_path == temp_root / "videonote_dl_life-ok"
        seen.append((opts.output_path.is_dir(), is_dir_locked(opts.output_path)))
        return await write_payload(opts, cb)

    result = asyncio.run(lifecycle.execute(download, lambda done, total: progress.append((done, total))))
    assert seen == [(True, True)]
    assert result.path == temp_root / "videonote_dl_life-ok" / "clip.mp4"
    assert result.size == len(PAYLOAD)
    assert progress == [(len(PAYLOAD) // 2, len(PAYLOAD)), (len(PAYLOAD), len(PAYLOAD))]
    assert not (temp_root / "videonote_dl_life-ok").exists()
    assert lifecycle.state is LifecycleState.SUCCEEDED
    assert options.correlation_id == "life-ok"
    assert event_log.names() == ["tempdir.created", "job.started", "job.succeeded", "tempdir.removed"]
    assert all(e["correlation_id"] == "life-ok" for e in event_log.read())
    succeeded = event_log.named("job.succeeded")[0]
    assert (succeeded["attempt"], succeeded["size"]) == (1, len(PAYLOAD))
    assert succeeded["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()


def test_lifecycle_record(temp_root: Path) -> None:
    lifecycle = DownloadLifecycle("life-rec", _options())
    assert lifecycle.state is LifecycleState.PENDING
    assert lifecycle.record.attempt == 0
    asyncio.run(lifecycle.execute(write_payload))
    record = lifecycle.record.to_dict()
    assert record["state"] == "succeeded"
    assert record["correlation_id"] == "life-rec"
    assert record["attempt"] == 1
    assert record["temp_dir"] == str(temp_root / "videonote_dl_life-rec")
    assert record["error"] is None
    assert record["created_at"] <= record["started_at"] <= record["finished_at"]


def test_cleanup_on_success_false_keeps_the_dir(temp_root: Path) -> None:
    lifecycle = DownloadLifecycle("life-keep", _options(), cleanup_on_success=False)
    result = asyncio.run(lifecycle.execute(write_payload))
    assert result.path.read_bytes() == PAYLOAD
    assert lifecycle.temp_dir == temp_root / "videonote_dl_life-keep"
    assert not is_dir_locked(lifecycle.temp_dir)  # guardado, pero ya no vivo: el recolector podrá borrarlo
    assert lifecycle.get_temp_path("clip.mp4") == result.path
    assert lifecycle.cleanup() is True
    assert not result.path.parent.exists()


# --- DownloadLifecycle: fallos ----------------------------------------------------------------
async def _fail_with(exc: BaseException, options: DownloadOptions) -> DownloadResult:
    assert options.output_path is not None
    (options.output_path / "partial.bin").write_bytes(b"half")
    raise exc


def test_execute_failure_reraises_and_removes_the_dir(temp_root: Path, event_log: EventLog) -> None:
    lifecycle = DownloadLifecycle("life-fail", _options())
    error = ServerError("HTTP 503", retry_after=2.0, status=503)
    with pytest.raises(ServerError) as info:
        asyncio.run(lifecycle.execute(lambda opts, _cb: _fail_with(error, opts)))
    assert info.value is error
    assert not (temp_root / "videonote_dl_life-fail").exists()
    assert lifecycle.state is LifecycleState.FAILED
    assert lifecycle.record.error == {"kind": "http_status", "message": "HTTP 503", "transient": True,
                                      "retry_after": 2.0, "status": 503}
    (failed,) = event_log.named("job.failed")
    assert failed["level"] == "error"
    assert failed["error"]["kind"] == "http_status"
    assert event_log.names()[-1] == "tempdir.removed"


def test_execute_exception_reraises_and_removes_the_dir(temp_root: Path) -> None:
    lifecycle = DownloadLifecycle("life-exc", _options())
    with pytest.raises(ZeroDivisionError):
        asyncio.run(lifecycle.execute(lambda opts, _cb: _fail_with(ZeroDivisionError("bug"), opts)))
    assert not (temp_root / "videonote_dl_life-exc").exists()
    assert lifecycle.state is LifecycleState.FAILED
    # Un error inesperado es de la lista enumerada de kinds (internal), no el nombre de la excepción.
    assert lifecycle.record.error == {"kind": "internal", "message": "ZeroDivisionError: bug", "transient": False}


def test_cleanup_on_failure_false_keeps_the_dir(temp_root: Path) -> None:
    lifecycle = DownloadLifecycle("life-fail-keep", _options(), cleanup_on_failure=False)
    with pytest.raises(DownloadError):
        asyncio.run(lifecycle.execute(lambda opts, _cb: _fail_with(PermanentDownloadError("no"), opts)))
    path = temp_root / "videonote_dl_life-fail-keep"
    assert (path / "partial.bin").read_bytes() == b"half"
    assert not is_dir_locked(path)
    assert cleanup_download("life-fail-keep") is True


def test_execute_keyboard_interrupt_removes_the_dir(temp_root: Path, event_log: EventLog) -> None:
    lifecycle = DownloadLifecycle("life-kbd", _options())
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(lifecycle.execute(lambda opts, _cb: _fail_with(KeyboardInterrupt(), opts)))
    assert not (temp_root / "videonote_dl_life-kbd").exists()
    assert lifecycle.state is LifecycleState.FAILED
    assert event_log.names()[-1] == "tempdir.removed"


def test_real_sigint_during_execute_removes_the_dir(temp_root: Path) -> None:
    # asyncio.run convierte SIGINT en la cancelación de la tarea principal y luego KeyboardInterrupt.
    lifecycle = DownloadLifecycle("life-sigint", _options())
    seen: list[bool] = []

    async def download(opts: DownloadOptions, _cb: ProgressCallback | None) -> DownloadResult:
        assert opts.output_path is not None
        (opts.output_path / "partial.bin").write_bytes(b"half")
        seen.append(opts.output_path.is_dir())
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(lifecycle.execute(download))
    assert seen == [True]
    assert not (temp_root / "videonote_dl_life-sigint").exists()
    assert lifecycle.state is LifecycleState.CANCELLED


# --- DownloadLifecycle: cancelación -------------------------------------------------------------
def _run_and_cancel(lifecycle: DownloadLifecycle) -> dict[str, object]:
    """Corre ``execute`` en una tarea real, la cancela a mitad de descarga y cuenta lo visto."""
    observed: dict[str, object] = {}

    async def scenario() -> None:
        started = asyncio.Event()

        async def slow(opts: DownloadOptions, _cb: ProgressCallback | None) -> DownloadResult:
            assert opts.output_path is not None
            with open(opts.output_path / "partial.bin", "wb") as out:
                out.write(b"first chunk")
                started.set()
                await asyncio.sleep(3600)  # «descargando»: sólo la cancelación la saca de aquí
            raise AssertionError("unreachable")

        task = asyncio.create_task(lifecycle.execute(slow))
        await started.wait()
        assert lifecycle.temp_dir is not None
        observed["inside"] = (lifecycle.temp_dir / "partial.bin").is_file()
        observed["state_inside"] = lifecycle.state
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            observed["cancelled"] = True
        observed["task_cancelled"] = task.cancelled()

    asyncio.run(scenario())
    return observed


def test_cancellation_mid_download_removes_the_dir(temp_root: Path, event_log: EventLog) -> None:
    lifecycle = DownloadLifecycle("life-cancel", _options())
    observed = _run_and_cancel(lifecycle)
    assert observed == {"inside": True, "state_inside": LifecycleState.RUNNING, "cancelled": True,
                        "task_cancelled": True}
    assert not (temp_root / "videonote_dl_life-cancel").exists()
    assert lifecycle.state is LifecycleState.CANCELLED
    assert event_log.names() == ["tempdir.created", "job.started", "job.cancelled", "tempdir.removed"]
    assert event_log.named("job.cancelled")[0]["level"] == "warning"


def test_keep_temp_dir_on_cancel_keeps_it_for_resume(temp_root: Path, event_log: EventLog) -> None:
    lifecycle = DownloadLifecycle("life-interrupt", _options())
    lifecycle.keep_temp_dir_on_cancel()
    observed = _run_and_cancel(lifecycle)
    assert observed["cancelled"] is True
    path = temp_root / "videonote_dl_life-interrupt"
    assert (path / "partial.bin").read_bytes() == b"first chunk"
    assert not is_dir_locked(path)
    assert lifecycle.state is LifecycleState.INTERRUPTED
    assert event_log.names() == ["tempdir.created", "job.started", "job.interrupted", "tempdir.kept"]
    # la siguiente ejecución reanuda en el mismo directorio
    resumed = DownloadLifecycle("life-interrupt", _options())
    saw_partial: list[bytes] = []

    async def resume(opts: DownloadOptions, cb: ProgressCallback | None) -> DownloadResult:
        assert opts.output_path is not None
        saw_partial.append((opts.output_path / "partial.bin").read_bytes())
        return await write_payload(opts, cb)

    asyncio.run(resumed.execute(resume))
    assert saw_partial == [b"first chunk"]
    assert not path.exists()


def test_many_concurrent_lifecycles_each_get_their_own_dir(temp_root: Path) -> None:
    ids = [f"conc-{i}" for i in range(20)]
    seen: dict[str, Path] = {}

    async def main() -> None:
        gate = asyncio.Barrier(len(ids))

        async def download(opts: DownloadOptions, cb: ProgressCallback | None) -> DownloadResult:
            assert opts.output_path is not None and opts.correlation_id is not None
            seen[opts.correlation_id] = opts.output_path
            await gate.wait()  # todas vivas a la vez
            assert sorted(os.listdir(temp_root)) == sorted(f"videonote_dl_{i}" for i in ids)
            return await write_payload(opts, cb)

        await asyncio.gather(*(DownloadLifecycle(i, _options()).execute(download) for i in ids))

    asyncio.run(main())
    assert {cid: path.name for cid, path in seen.items()} == {i: f"videonote_dl_{i}" for i in ids}
    assert os.listdir(temp_root) == []


def test_a_live_download_is_never_reaped(temp_root: Path) -> None:
    lifecycle = DownloadLifecycle("life-live", _options())
    reports = []

    async def download(opts: DownloadOptions, cb: ProgressCallback | None) -> DownloadResult:
        assert opts.output_path is not None
        os.utime(opts.output_path, (0, 0))  # parece viejísimo...
        reports.append(reap_temp_root(temp_root, max_age=0))  # ...pero está bloqueado
        assert opts.output_path.is_dir()
        return await write_payload(opts, cb)

    asyncio.run(lifecycle.execute(download))
    assert [(r.locked, len(r.removed)) for r in reports] == [(1, 0)]
    assert lifecycle.state is LifecycleState.SUCCEEDED


def test_lifecycle_refuses_traversal_in_get_temp_path(temp_root: Path) -> None:
    lifecycle = DownloadLifecycle("life-names", _options())
    assert lifecycle.get_temp_path("a.mp4") == temp_root / "videonote_dl_life-names" / "a.mp4"
    for bad in ("../x", "/etc/x"):
        with pytest.raises(ValueError):
            lifecycle.get_temp_path(bad)
