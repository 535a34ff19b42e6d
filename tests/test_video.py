"""Vídeo real, sin red (issue 16): rutas a yt-dlp, fusiones, nombres, listas y post-proceso.

Los medios se generan con ffmpeg al empezar (lavfi testsrc + sine): MP4 progresivo, HLS (TS y
fMP4), DASH con vídeo y audio separados, y páginas con ``<video><source type=...>``; los sirve el
servidor de pruebas en 127.0.0.1 y el daemon real los descarga. Lo publicado se comprueba con
``ffmpeg -i`` (flujos, tamaño, duración).
"""

from __future__ import annotations

import hashlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer
from tests.support.media import MediaSet, moov_before_mdat, probe, serve

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _profiles() -> dict[str, Any]:
    """Los perfiles del config.yaml del repositorio (el ``videonote`` que se distribuye) y dos de prueba."""
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())["postprocess"]["profiles"]
    return {
        **shipped,
        "boom": {"command": ["sh", "-c", "echo starting >&2; echo boom: bad input >&2; exit 3", "{input}",
                             "{output}"], "timeout": "30s"},
    }


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaSet:
    return MediaSet(tmp_path_factory.mktemp("media"))


@pytest.fixture
def server(media: MediaSet) -> Iterator[TestServer]:
    with TestServer() as srv:
        serve(srv, media.root)
        serve(srv, media.root, prefix="/ct")
        yield srv


def _daemon(tmp_path: Path, **extra: Any) -> DaemonProcess:
    config: dict[str, Any] = {"postprocess": {"profiles": _profiles()}, "ytdlp": {"concurrent_fragments": 4}}
    config.update(extra)
    return DaemonProcess(tmp_path / "d", **config)


def _succeeded(d: DaemonProcess, job_id: str, timeout: float = 120) -> dict[str, Any]:
    kind, record = d.wait_record(job_id, timeout=timeout)
    assert kind == "done", (record, d.stderr_text()[-3000:])
    return record


def _assert_av(path: Path, duration: float) -> None:
    info = probe(path)
    assert len(info.video) == 1 and len(info.audio) == 1, info.raw
    assert abs(info.duration - duration) < 0.5, info.raw


@pytest.mark.parametrize(("kind", "path"), [("hls_ts", "index.m3u8"), ("hls_fmp4", "index.m3u8"),
                                            ("dash", "manifest.mpd")])
def test_manifest_url_with_auto_goes_to_ytdlp_and_is_merged(kind: str, path: str, media: MediaSet,
                                                             server: TestServer, tmp_path: Path) -> None:
    with _daemon(tmp_path) as d:
        d.drop_job({"id": f"m-{kind}", "url": server.url(f"/media/{kind}/{path}"), "filename": f"clip-{kind}"})
        record = _succeeded(d, f"m-{kind}")
        published = Path(record["path"])
        assert published.name == f"clip-{kind}.mp4"  # el filename del trabajo + la extensión del resultado
        _assert_av(published, media.duration)
        routed = d.events(f"m-{kind}", "job.routed")
        assert routed and routed[0]["downloader"] == "ytdlp" and routed[0]["rule"] == "suffix"
        d.wait_temp_dirs_gone()


def test_manifest_without_suffix_is_routed_by_content_type(media: MediaSet, server: TestServer,
                                                          tmp_path: Path) -> None:
    body = (media.root / "hls_ts" / "index.m3u8").read_bytes()
    server.add("/ct/hls_ts/live", Behavior(data=body, content_type="application/x-mpegURL"))
    with _daemon(tmp_path) as d:
        d.drop_job({"id": "ct-1", "url": server.url("/ct/hls_ts/live")})
        record = _succeeded(d, "ct-1")
        routed = d.events("ct-1", "job.routed")
        assert routed and routed[0]["rule"] == "content-type application/x-mpegurl"
        _assert_av(Path(record["path"]), media.duration)
        assert Path(record["path"]).suffix == ".mp4"  # nunca el texto del manifiesto publicado


@pytest.mark.parametrize("kind", ["progressive", "hls_ts", "dash"])
def test_pages_with_video_source(kind: str, media: MediaSet, server: TestServer, tmp_path: Path) -> None:
    with _daemon(tmp_path) as d:
        d.drop_job({"id": f"p-{kind}", "url": server.url(f"/media/{kind}/page.html"), "downloader": "ytdlp"})
        record = _succeeded(d, f"p-{kind}")
        published = Path(record["path"])
        # Sin filename: el título saneado que yt-dlp da al vídeo de la página (el genérico numera los
        # vídeos incrustados: "TÍTULO (1)"), nunca su plantilla "título [id].ext".
        assert published.name == f"{kind} clip (1).mp4", published.name
        _assert_av(published, media.duration)


def test_videonote_profile_makes_a_telegram_video_note(media: MediaSet, server: TestServer,
                                                       tmp_path: Path) -> None:
    with _daemon(tmp_path) as d:
        d.drop_job({"id": "vn-1", "url": server.url("/media/progressive/clip.mp4"), "downloader": "ytdlp",
                    "postprocess": "videonote", "filename": "note"})
        record = _succeeded(d, "vn-1")
        out = Path(record["path"])
        assert out.name == "note.mp4"
        info = probe(out)
        assert info.video == ("h264",) and info.audio == ("aac",), info.raw
        assert (info.width, info.height) == (240, 240)  # 320x240 recortado al centro: cuadrado
        assert abs(info.duration - media.duration) < 0.5
        assert moov_before_mdat(out)  # faststart
        assert record["extra"]["postprocess"]["profile"] == "videonote"
        assert record["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
        started = d.events("vn-1", "job.postprocess_started")
        finished = d.events("vn-1", "job.postprocess_finished")
        assert started and finished and finished[0]["outcome"] == "succeeded" and finished[0]["returncode"] == 0
        assert sorted(p.name for p in out.parent.iterdir() if not p.name.startswith(".")) == ["note.mp4"]


def test_videonote_caps_size_at_640_and_length_at_60s(tmp_path: Path, server: TestServer) -> None:
    big = MediaSet(tmp_path / "big", duration=62.0, size="800x700", kinds=("progressive",))
    serve(server, big.root, prefix="/big")
    with _daemon(tmp_path) as d:
        d.drop_job({"id": "vn-big", "url": server.url("/big/progressive/clip.mp4"), "downloader": "http",
                    "postprocess": "videonote"})
        out = Path(_succeeded(d, "vn-big", timeout=240)["path"])
        info = probe(out)
        assert (info.width, info.height) == (640, 640)
        assert info.duration <= 60.1 and info.duration > 59.0, info.raw
        assert info.video == ("h264",) and info.audio == ("aac",)


def test_postprocess_failure_fails_the_job_with_the_stderr_tail(server: TestServer, tmp_path: Path) -> None:
    with _daemon(tmp_path) as d:
        d.drop_job({"id": "pp-bad", "url": server.url("/media/progressive/clip.mp4"), "postprocess": "boom"})
        kind, record = d.wait_record("pp-bad", timeout=60)
        assert kind == "failed"
        assert record["error"]["kind"] == "postprocess"
        assert "boom: bad input" in record["error"]["stderr_tail"]
        assert record["error"]["returncode"] == 3
        finished = d.events("pp-bad", "job.postprocess_finished")
        assert finished[0]["outcome"] == "failed" and "boom: bad input" in finished[0]["stderr_tail"]
        assert not any(p for p in (d.base / "out").rglob("*") if p.is_file())  # nada publicado
        d.wait_temp_dirs_gone()


def test_unknown_postprocess_profile_is_rejected_listing_the_known_ones(server: TestServer, tmp_path: Path) -> None:
    with _daemon(tmp_path) as d:
        d.drop_job({"id": "pp-x", "url": server.url("/media/progressive/clip.mp4"), "postprocess": "nope"},
                   name="pp-x.yaml")
        # El archivo llega a rejected/ un instante antes que su ``.reason``: se espera al motivo.
        reasons = wait_until(lambda: "".join(p.read_text() for p in (d.spool / "rejected").glob("*.reason")),
                             timeout=30, what="rejection reason")
        assert "'nope' is not a profile" in reasons and "videonote" in reasons and "boom" in reasons


def test_cancel_kills_the_postprocess_process_group(server: TestServer, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    profiles = _profiles()
    profiles["hang"] = {"command": ["sh", "-c", f"echo $$ >> {pids}; sleep 300 & echo $! >> {pids}; wait",
                                    "{input}", "{output}"], "timeout": "5m"}
    with DaemonProcess(tmp_path / "d", postprocess={"profiles": profiles}) as d:
        d.drop_job({"id": "pp-hang", "url": server.url("/media/progressive/clip.mp4"), "postprocess": "hang"})
        wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, timeout=60)
        group = {int(p): _stat_fields(int(p)) for p in pids.read_text().split()}
        (d.spool / "cancel").mkdir(parents=True, exist_ok=True)
        (d.spool / "cancel" / "pp-hang").touch()
        kind, record = d.wait_record("pp-hang", timeout=30)
        assert kind == "failed" and record["outcome"] == "cancelled", record

        def gone(pid: int, first: list[str] | None) -> bool:
            # Muerto es muerto aunque nadie lo haya recogido aún: el ``sleep`` huérfano pasa a PID 1
            # (fuera del daemon), que bajo carga puede tardar en recogerlo; un zombi ya no corre. Y un
            # pid recogido puede volver a usarse en segundos con la suite en paralelo (pid_max es
            # 32768): otro proceso con ese pid no es el del grupo (se distingue por su inicio).
            now = _stat_fields(pid)
            return now is None or now[0] in ("Z", "X") or first is None or now[19] != first[19]

        wait_until(lambda: all(gone(p, f) for p, f in group.items()), timeout=15, what="post-process group killed")
        finished = d.events("pp-hang", "job.postprocess_finished")
        assert finished and finished[0]["outcome"] == "cancelled"
        d.wait_temp_dirs_gone()


def _stat_fields(pid: int) -> list[str] | None:
    """Los campos de /proc/PID/stat tras el nombre (``[0]`` el estado, ``[19]`` el inicio), o None si
    ya no está."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _playlist_page(server: TestServer, items: list[str]) -> str:
    body = "".join(f'<video controls><source src="{src}" type="video/mp4"></video>' for src in items)
    server.add("/list.html", Behavior(data=f"<html><head><title>two clips</title></head><body>{body}</body></html>"
                                      .encode(), content_type="text/html"))
    return server.url("/list.html")


def test_playlist_publishes_every_item_in_one_folder(media: MediaSet, server: TestServer, tmp_path: Path) -> None:
    url = _playlist_page(server, ["/media/progressive/clip.mp4", "/media/hls_ts/index.m3u8"])
    with _daemon(tmp_path) as d:
        d.drop_job({"id": "pl-1", "url": url, "playlist": True})
        record = _succeeded(d, "pl-1")
        folder = Path(record["path"])
        assert folder == d.base / "out" / "pl-1" and folder.is_dir()
        files = record["extra"]["files"]
        assert len(files) == 2
        assert sorted(p.name for p in folder.iterdir()) == sorted(f["name"] for f in files)
        for entry in files:
            path = folder / entry["name"]
            assert path.stat().st_size == entry["size"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
            _assert_av(path, media.duration)
        assert not list((d.base / "out" / ".videonote-dl-staging").iterdir())
        d.wait_temp_dirs_gone()


def test_playlist_with_a_failed_item_publishes_nothing(server: TestServer, tmp_path: Path) -> None:
    server.add("/missing.mp4", Behavior(status=404))
    url = _playlist_page(server, ["/media/progressive/clip.mp4", "/missing.mp4"])
    with _daemon(tmp_path) as d:
        d.drop_job({"id": "pl-bad", "url": url, "playlist": True, "retries": 0})
        kind, record = d.wait_record("pl-bad", timeout=120)
        assert kind == "failed", record
        assert not (d.base / "out" / "pl-bad").exists()
        assert not [p for p in (d.base / "out").rglob("*") if p.is_file()]
        d.wait_temp_dirs_gone()


def test_fragmented_download_resumes_after_sigkill(tmp_path: Path) -> None:
    """HLS de 24 segmentos; el daemon muere (SIGKILL) mientras baja el 12: al volver, ningún segmento
    ya bajado se pide otra vez (a lo sumo uno, el que estaba en vuelo)."""
    import threading

    hls = MediaSet(tmp_path / "long", duration=24.0, size="160x120", kinds=("hls_ts",))
    segments = sorted(p.name for p in (hls.root / "hls_ts").glob("seg*.ts"))
    assert len(segments) >= 20
    held = segments[12]
    release = threading.Event()
    with TestServer() as srv:
        serve(srv, hls.root)
        data = (hls.root / "hls_ts" / held).read_bytes()
        srv.add(f"/media/hls_ts/{held}", Behavior(data=data, content_type="video/mp2t", hold=release,
                                                   hold_after=len(data) // 2, hold_times=1))
        d = _daemon(tmp_path, ytdlp={"concurrent_fragments": 1, "zygote": True}).start()
        try:
            d.drop_job({"id": "rs-1", "url": srv.url("/media/hls_ts/index.m3u8")})
            wait_until(lambda: srv.requests_for(f"/media/hls_ts/{held}"), timeout=120, what="held segment asked")
            d.kill9()
            release.set()
            time.sleep(0.5)
            d.start()
            _succeeded(d, "rs-1", timeout=120)
        finally:
            release.set()
            if d.proc is not None and d.proc.poll() is None:
                d.signal(signal.SIGTERM)
                d.stop()
        counts = {name: len(srv.requests_for(f"/media/hls_ts/{name}")) for name in segments}
        refetched = [name for name, n in counts.items() if n > 1]
        assert all(n >= 1 for n in counts.values()), counts
        assert len(refetched) <= 1, counts  # sólo el que estaba en vuelo al morir
