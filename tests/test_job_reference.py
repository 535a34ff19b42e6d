"""La tabla de campos de docs/jobs.md sale de ``JOB_SCHEMA``: si se desvía, esta prueba falla."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemon.job_reference import BEGIN_MARK, END_MARK, main, render_job_table, splice_job_table
from daemon.jobs import JOB_FIELDS, JOB_SCHEMA, JobLimits, JobRejected, JobSpec, parse_job

REPO = Path(__file__).resolve().parents[1]
JOBS_MD = REPO / "docs" / "jobs.md"
REGENERATE = "python -m daemon.job_reference docs/jobs.md"


def test_docs_jobs_md_table_matches_the_schema() -> None:
    text = JOBS_MD.read_text(encoding="utf-8")
    assert text.count(BEGIN_MARK) == 1 and text.count(END_MARK) == 1, f"docs/jobs.md lacks its markers: {REGENERATE}"
    assert render_job_table() in text, f"docs/jobs.md's field table is out of date: run `{REGENERATE}`"
    assert splice_job_table(text) == text


def test_every_schema_field_has_one_row_in_schema_order() -> None:
    table = render_job_table()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == list(JOB_FIELDS) == [spec.key for spec in JOB_SCHEMA]
    assert len(set(JOB_FIELDS)) == len(JOB_FIELDS)


def test_schema_and_jobspec_name_the_same_fields() -> None:
    # Un campo nuevo en JobSpec sin fila en JOB_SCHEMA (o al revés) no se validaría ni documentaría.
    derived = {"id_source", "file_sha256"}  # los pone parse_job, no el archivo
    spec_fields = {f.name for f in dataclasses.fields(JobSpec)} - derived
    assert spec_fields == set(JOB_FIELDS)


# Un valor malo por campo y lo que su motivo dice: cada fila de la tabla tiene una comprobación que rechaza.
BAD_VALUES: dict[str, tuple[Any, str]] = {
    "url": ("ftp://example.org/x", "URL scheme 'ftp' is not allowed"), "id": ("../x", "'id' '../x' is not valid"),
    "downloader": ("wget", "'downloader' must be one of"), "filename": ("../x", "'filename' must be a bare"),
    "output_dir": ("/etc", "'output_dir' must be relative"), "sha256": ("abc", "'sha256' must be 64"),
    "max_bytes": ("lots", "'max_bytes':"), "timeout": (0, "'timeout' must be above zero"),
    "retries": (101, "'retries' must be an integer from 0 to 100"), "format": ("", "'format' must be a string"),
    "priority": (1001, "'priority' must be an integer from -1000 to 1000"), "playlist": ("yes", "'playlist' must"),
    "headers": (["X-A"], "'headers' must be a mapping"), "forward_headers": ("X-A", "'forward_headers' must be a list"),
    "postprocess": ("nosuch", "'postprocess' 'nosuch' is not a profile of this daemon"),
}


@pytest.mark.parametrize("spec", JOB_SCHEMA, ids=lambda spec: spec.key)
def test_every_schema_field_rejects_a_bad_value(spec: Any) -> None:
    value, expected = BAD_VALUES[spec.key]
    document = {"url": "https://example.org/clip.mp4", spec.key: value}
    with pytest.raises(JobRejected) as info:
        parse_job(orjson.dumps(document), "job.json", JobLimits())
    assert expected in info.value.reason


def test_splice_replaces_a_stale_table_and_keeps_the_rest() -> None:
    stale = f"# Job files\n\nintro\n\n{BEGIN_MARK}\n| field | type |\n| `url` | old |\n{END_MARK}\n\n## After\ntext\n"
    updated = splice_job_table(stale)
    assert updated == f"# Job files\n\nintro\n\n{render_job_table()}\n## After\ntext\n"
    assert "| `url` | old |" not in updated
    assert splice_job_table(updated) == updated  # idempotente


def test_splice_refuses_a_document_without_markers() -> None:
    with pytest.raises(ValueError, match="lacks the markers"):
        splice_job_table("# Job files\n\n| field | type |\n")
    with pytest.raises(ValueError, match="lacks the markers"):
        splice_job_table(f"{END_MARK}\n{BEGIN_MARK}\n")  # desordenadas


def test_the_command_rewrites_the_table_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "jobs.md"
    doc.write_text(f"before\n{BEGIN_MARK}\nstale\n{END_MARK}\nafter\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "daemon.job_reference", str(doc)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert doc.read_text(encoding="utf-8") == f"before\n{render_job_table()}after\n"


def test_the_command_says_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "jobs.md"
    doc.write_text("no markers here\n", encoding="utf-8")
    assert main([str(doc)]) == 1
    assert "lacks the markers" in capsys.readouterr().err
    assert doc.read_text(encoding="utf-8") == "no markers here\n"  # no se tocó
    assert main([]) == 0
    assert capsys.readouterr().out == render_job_table()
