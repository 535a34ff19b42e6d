"""Pruebas unitarias de daemon/jobs.py: lectura segura (read_job_file) y validación (parse_job).

El corpus de tests/data/bad_jobs/ se lee archivo por archivo; los casos que no se pueden
guardar en git (enlaces simbólicos, FIFO, directorio, socket, dispositivo, enlace duro, archivos
enormes) se construyen aquí en el directorio temporal de cada prueba.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import yaml

from daemon.ids import CORRELATION_ID_PATTERN
from daemon.jobs import JOB_FILE_MAX_BYTES, JobLimits, JobRejected, JobSpec, parse_job, read_job_file

CORPUS = Path(__file__).resolve().parent / "data" / "bad_jobs"
EXPECTED: dict[str, str] = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))
PWNED = Path("/tmp/videonote-bad-job-pwned")  # lo que intentan crear los casos de inyección
GOOD = "url: https://example.org/clip.mp4\n"


def examine(path: Path, limits: JobLimits | None = None) -> JobSpec:
    """Lee ``path`` como lo hace el daemon (relativo a su carpeta, sin seguir enlaces) y lo valida."""
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        data, _st = read_job_file(path.name, dir_fd)
    finally:
        os.close(dir_fd)
    return parse_job(data, path.name, limits or JobLimits())


def rejection(path: Path, limits: JobLimits | None = None) -> JobRejected:
    """El rechazo de ``path``; falla la prueba si el archivo se acepta."""
    with pytest.raises(JobRejected) as info:
        examine(path, limits)
    return info.value


def assert_actionable(reason: str) -> None:
    """Un motivo sirve a una persona: no vacío, una sola línea, sin caracteres de control."""
    assert reason.strip(), "empty rejection reason"
    assert reason.isprintable(), f"reason has control characters: {reason!r}"
    assert len(reason) <= 1000


def parse(text: str | bytes, name: str = "job.yaml", limits: JobLimits | None = None) -> JobSpec:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return parse_job(data, name, limits or JobLimits())


def reject(text: str | bytes, name: str = "job.yaml", limits: JobLimits | None = None) -> str:
    with pytest.raises(JobRejected) as info:
        parse(text, name, limits)
    assert_actionable(info.value.reason)
    return info.value.reason


# --- el corpus ---------------------------------------------------------------------------------
def corpus_files() -> list[str]:
    return sorted(p.name for p in CORPUS.iterdir() if p.name != "expected.yaml")


def test_corpus_is_complete() -> None:
    files = corpus_files()
    assert len(files) >= 40
    assert set(files) == set(EXPECTED), (
        f"files without an entry in expected.yaml: {sorted(set(files) - set(EXPECTED))}; "
        f"entries without a file: {sorted(set(EXPECTED) - set(files))}"
    )
    assert all(isinstance(v, str) and v for v in EXPECTED.values())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file_is_rejected_with_its_reason(name: str, tmp_path: Path) -> None:
    # Copia propia (un solo enlace, como la dejaría un productor).
    job = tmp_path / name
    shutil.copyfile(CORPUS / name, job)
    error = rejection(job)
    assert EXPECTED[name] in error.reason, f"{name}: {error.reason!r} lacks {EXPECTED[name]!r}"
    assert_actionable(error.reason)
    assert not PWNED.exists(), f"{name} ran code: {PWNED} exists"


def test_alias_bomb_is_small_and_refused_before_expansion(tmp_path: Path) -> None:
    bomb = (CORPUS / "alias_bomb.yaml").read_bytes()
    assert len(bomb) < 512 and bomb.count(b"*") >= 72
    assert "anchors and aliases" in reject(bomb)


def test_field_errors_carry_the_job_id() -> None:
    with pytest.raises(JobRejected) as info:
        parse(GOOD + "id: clip-42\nretries: 1000\n")
    assert info.value.job_id == "clip-42"


def test_reason_never_echoes_url_credentials() -> None:
    # urllib cita el netloc (con usuario y contraseña) en algunos errores: el motivo no.
    reason = reject("url: 'https://user:s3cret@ex\u2100ample.org/clip.mp4'\n")
    assert "s3cret" not in reason and "not a valid URL" in reason


# --- casos que se construyen en la prueba -----------------------------------------------------
def _symlink_to_shadow(folder: Path) -> Path:
    (folder / "symlink_to_shadow.yaml").symlink_to("/etc/shadow")
    return folder / "symlink_to_shadow.yaml"


def _symlink_to_dev_zero(folder: Path) -> Path:
    (folder / "symlink_to_dev_zero.yaml").symlink_to("/dev/zero")
    return folder / "symlink_to_dev_zero.yaml"


def _symlink_to_good_job(folder: Path) -> Path:
    # Un enlace a un trabajo válido también se rechaza: nunca se sigue.
    (folder / "real.yaml").write_text(GOOD)
    (folder / "symlink_to_good_job.yaml").symlink_to(folder / "real.yaml")
    return folder / "symlink_to_good_job.yaml"


def _dangling_symlink(folder: Path) -> Path:
    (folder / "dangling.yaml").symlink_to(folder / "nowhere")
    return folder / "dangling.yaml"


def _fifo(folder: Path) -> Path:
    os.mkfifo(folder / "fifo.yaml")
    return folder / "fifo.yaml"


def _directory(folder: Path) -> Path:
    (folder / "directory.yaml").mkdir()
    (folder / "directory.yaml" / "url").write_text("https://example.org/clip.mp4\n")
    return folder / "directory.yaml"


def _socket(folder: Path) -> Path:
    # La ruta de un socket AF_UNIX se limita a 108 bytes: se crea con nombre relativo.
    cwd = os.getcwd()
    os.chdir(folder)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind("socket.yaml")
    finally:
        os.chdir(cwd)
        sock.close()
    return folder / "socket.yaml"


def _char_device(folder: Path) -> Path:
    try:
        os.mknod(folder / "char_device.yaml", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # como /dev/zero
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD; the symlink to /dev/zero case still runs")
    return folder / "char_device.yaml"


def _hard_link_foreign(folder: Path) -> Path:
    foreign = folder.parent / "foreign_owner.yaml"
    foreign.write_text(GOOD)
    if os.geteuid() == 0:
        os.chown(foreign, 65534, 65534)  # de otro usuario (nobody), como un archivo que el productor no posee
    os.link(foreign, folder / "hard_link_foreign.yaml")
    return folder / "hard_link_foreign.yaml"


def _ten_megabytes(folder: Path) -> Path:
    with open(folder / "ten_mb.yaml", "wb") as out:
        out.write(GOOD.encode())
        out.write(b"#" * (10 * 1024 * 1024))
    return folder / "ten_mb.yaml"


def _too_big(folder: Path) -> Path:
    path = folder / "too_big.yaml"
    path.write_bytes(GOOD.encode() + b"#" * (JOB_FILE_MAX_BYTES - len(GOOD)) + b"\n")
    assert path.stat().st_size == JOB_FILE_MAX_BYTES + 1
    return path


SPECIAL: dict[str, tuple[Callable[[Path], Path], str]] = {
    "symlink_to_shadow": (_symlink_to_shadow, "symbolic link"),
    "symlink_to_dev_zero": (_symlink_to_dev_zero, "symbolic link"),
    "symlink_to_good_job": (_symlink_to_good_job, "symbolic link"),
    "dangling_symlink": (_dangling_symlink, "symbolic link"),
    "fifo": (_fifo, "FIFO"),
    "directory": (_directory, "directory"),
    "socket": (_socket, "socket"),
    "char_device": (_char_device, "device"),
    "hard_link_foreign": (_hard_link_foreign, "other hard links"),
    "ten_mb": (_ten_megabytes, "the limit is 65536 bytes"),
    "too_big": (_too_big, "the limit is 65536 bytes"),
}


@pytest.mark.parametrize("case", sorted(SPECIAL))
def test_special_file_is_rejected(case: str, tmp_path: Path) -> None:
    build, expected = SPECIAL[case]
    folder = tmp_path / "incoming"
    folder.mkdir()
    path = build(folder)
    error = rejection(path)
    assert expected in error.reason, f"{case}: {error.reason!r}"
    assert "regular file" in error.reason or "limit" in error.reason or "hard links" in error.reason
    assert_actionable(error.reason)


def test_fifo_without_writer_never_blocks(tmp_path: Path) -> None:
    fifo = _fifo(tmp_path)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            examine(fifo)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(20)  # guarda contra un cuelgue, no una medida de tiempo
    if worker.is_alive():
        # Desbloquear el open() colgado abriendo el otro extremo, y fallar.
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
        pytest.fail("read_job_file blocked on a FIFO with no writer")
    assert len(outcome) == 1 and isinstance(outcome[0], JobRejected), outcome
    assert "FIFO" in outcome[0].reason


def test_fifo_with_a_writer_is_still_rejected(tmp_path: Path) -> None:
    fifo = _fifo(tmp_path)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # para poder abrir el extremo de escritura
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(writer, GOOD.encode())
        assert "FIFO" in rejection(fifo).reason
    finally:
        os.close(writer)
        os.close(reader)


def test_symlink_target_is_untouched(tmp_path: Path) -> None:
    target = tmp_path / "secret.yaml"
    target.write_text(GOOD)
    before = target.stat()
    (tmp_path / "link.yaml").symlink_to(target)
    assert "symbolic link" in rejection(tmp_path / "link.yaml").reason
    after = target.stat()
    assert (after.st_mtime_ns, after.st_size, after.st_mode) == (before.st_mtime_ns, before.st_size, before.st_mode)


def test_vanished_file_is_rejected_with_reason(tmp_path: Path) -> None:
    assert "disappeared" in rejection(tmp_path / "gone.yaml").reason


def test_file_at_the_size_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "at_limit.yaml"
    path.write_bytes(GOOD.encode() + b"#" * (JOB_FILE_MAX_BYTES - len(GOOD) - 1) + b"\n")
    assert path.stat().st_size == JOB_FILE_MAX_BYTES
    assert examine(path).url == "https://example.org/clip.mp4"


def test_read_job_file_returns_bytes_and_stat(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(GOOD)
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        data, st = read_job_file("job.yaml", dir_fd)
    finally:
        os.close(dir_fd)
    assert data == GOOD.encode() and stat.S_ISREG(st.st_mode) and st.st_size == len(GOOD)


# --- trabajos buenos ---------------------------------------------------------------------------
def test_explicit_id_wins_over_the_stem() -> None:
    job = parse(GOOD + "id: clip-42\n", "other-name.yaml")
    assert (job.id, job.id_source) == ("clip-42", "explicit")


def test_id_from_a_valid_stem() -> None:
    job = parse(GOOD, "cat_video-7.yml")
    assert (job.id, job.id_source) == ("cat_video-7", "stem")


@pytest.mark.parametrize("name", ["my job.yaml", "café.yaml", "a.b.yaml", "x" * 65 + ".json", "a+b.yaml"])
def test_id_generated_when_the_stem_is_not_valid(name: str) -> None:
    text = '{"url": "https://example.org/clip.mp4"}' if name.endswith(".json") else GOOD
    job = parse(text, name)
    assert job.id_source == "generated"
    assert CORRELATION_ID_PATTERN.fullmatch(job.id)
    assert parse(text, name).id != job.id  # cada vez uno nuevo


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1234, 1234), ("16KiB", 16 * 1024), ("500MB", 500_000_000), ("2GiB", 2 * 1024**3), ("1.5 MiB", 1572864)],
)
def test_max_bytes_with_units(value: object, expected: int) -> None:
    job = parse(yaml.safe_dump({"url": "https://example.org/clip.mp4", "max_bytes": value}))
    assert job.max_bytes == expected


def test_max_bytes_is_capped_by_config() -> None:
    job = parse(GOOD + "max_bytes: 1MB\n", limits=JobLimits(max_bytes=1000))
    assert job.max_bytes == 1000
    assert parse(GOOD + "max_bytes: 10\n", limits=JobLimits(max_bytes=1000)).max_bytes == 10


@pytest.mark.parametrize(("value", "seconds"), [(30, 30.0), ("500ms", 0.5), ("45s", 45.0), ("10m", 600.0),
                                                 ("1h", 3600.0), (2.5, 2.5)])
def test_timeout_durations(value: object, seconds: float) -> None:
    job = parse(yaml.safe_dump({"url": "https://example.org/clip.mp4", "timeout": value}))
    assert job.timeout == seconds


def test_allowed_schemes_are_honoured() -> None:
    https_only = JobLimits(allowed_schemes=("https",))
    reason = reject("url: http://example.org/clip.mp4\n", limits=https_only)
    assert "'http' is not allowed" in reason and "allowed: https" in reason
    assert parse("url: https://example.org/clip.mp4\n", limits=https_only).url == "https://example.org/clip.mp4"
    assert parse("url: HTTP://example.org/clip.mp4\n").url == "HTTP://example.org/clip.mp4"


def test_ytdlp_refused_when_disabled() -> None:
    reason = reject(GOOD + "downloader: ytdlp\n", limits=JobLimits(ytdlp_enabled=False))
    assert "disabled" in reason
    assert parse(GOOD + "downloader: ytdlp\n").downloader == "ytdlp"


def test_url_credentials_never_reach_the_record() -> None:
    job = parse("url: 'https://alice:s3cret-pw@example.org/clip.mp4'\n")
    assert job.url == "https://alice:s3cret-pw@example.org/clip.mp4"  # la descarga sí la necesita
    record = orjson.dumps(job.to_record())
    assert b"s3cret-pw" not in record and b"alice" not in record
    assert job.to_record()["url"] == "https://***@example.org/clip.mp4"


def test_header_values_never_reach_the_record() -> None:
    job = parse(GOOD + "headers: {Authorization: 'Bearer tok-123456', X-Trace: trace-abc}\n")
    assert dict(job.headers) == {"Authorization": "Bearer tok-123456", "X-Trace": "trace-abc"}
    record = job.to_record()
    assert record["headers"] == ["Authorization", "X-Trace"]
    assert b"tok-123456" not in orjson.dumps(record) and b"trace-abc" not in orjson.dumps(record)


def test_full_job_parses_every_field() -> None:
    text = (
        "url: https://example.org/clip.mp4\n"
        "id: clip-42\n"
        "downloader: ytdlp\n"
        "filename: Clip (final) – 2026.mp4\n"
        "output_dir: ./cats//2026/\n"
        f"sha256: {'AB' * 32}\n"
        "max_bytes: 500MB\n"
        "timeout: 10m\n"
        "retries: 5\n"
        'format: "best[height<=720]"\n'
        "priority: -3\n"
        "playlist: true\n"
    )
    job = parse(text)
    assert job == JobSpec(
        id="clip-42", url="https://example.org/clip.mp4", downloader="ytdlp", filename="Clip (final) – 2026.mp4",
        output_dir="cats/2026", sha256="ab" * 32, max_bytes=500_000_000, timeout=600.0, retries=5,
        format="best[height<=720]", priority=-3, playlist=True, id_source="explicit",
        file_sha256=hashlib.sha256(text.encode()).hexdigest(),
    )


def test_json_and_yaml_give_the_same_job() -> None:
    document = {"url": "https://example.org/clip.mp4", "id": "j1", "retries": 2, "filename": "a.mp4"}
    from_yaml = parse(yaml.safe_dump(document), "j.yaml")
    from_json = parse(orjson.dumps(document), "j.json")
    assert from_yaml.to_record() == from_json.to_record()


def test_utf8_bom_and_crlf_are_accepted() -> None:
    job = parse(b"\xef\xbb\xbfurl: https://example.org/clip.mp4\r\nid: bom-1\r\n")
    assert (job.id, job.url) == ("bom-1", "https://example.org/clip.mp4")


def test_unicode_file_names_are_allowed() -> None:
    assert parse(GOOD + "filename: 猫の動画.mp4\n").filename == "猫の動画.mp4"


def test_duplicate_keys_refused_even_in_nested_mappings() -> None:
    assert "duplicate key 'X-A'" in reject(GOOD + "headers: {X-A: '1', X-A: '2'}\n")
    assert "duplicate key 'X-A'" in reject('{"url": "https://example.org/c", "headers": {"X-A": "1", "X-A": "2"}}',
                                           "j.json")


def test_yaml_keys_equal_after_resolution_are_duplicates() -> None:
    # 1 y 0x1 son el mismo entero para YAML: PyYAML se quedaría con uno en silencio.
    assert "duplicate key 1" in reject(GOOD + "headers: {1: a, 0x1: b}\n")


def test_tagged_values_are_refused_before_construction() -> None:
    reason = reject('url: !!python/object/apply:os.system ["touch /tmp/videonote-bad-job-pwned"]\n')
    assert "YAML tags" in reason
    assert not PWNED.exists()
