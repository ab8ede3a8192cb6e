"""`evtrack test`: Tinybird's tests/<pipe>.yaml files, over our own project and a public one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from evtrack.cli import cli

from .conftest import ROOT
from .test_materialized import clicks, expected_pages, ndjson, write_project


def run(*args, data: Path):
    return CliRunner(mix_stderr=False).invoke(cli, ["--data", str(data), *args], catch_exceptions=False,
                                              terminal_width=200)


def test_our_test_files_are_what_the_reference_computes():
    """tests/*.yaml hold rows computed by tests/reference.py, not by the SQL under test."""
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "make_pipe_tests.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_evtrack_test_passes_our_own_project(tmp_path):
    result = run("test", "--project", str(ROOT), data=tmp_path / "unused")
    assert result.exit_code == 0, result.output + result.stderr
    assert result.output.count("PASS") == 11 and "11 passed, 0 failed" in result.output
    assert not (tmp_path / "unused").exists()  # a fresh temporary store, not --data


def _forward_project_with_tests(root: Path, expected_hits: int) -> Path:
    write_project(root)
    (root / "fixtures").mkdir()
    (root / "fixtures" / "clicks.ndjson").write_bytes(ndjson(clicks(30)))
    (root / "tests").mkdir()
    pricing = next(p for p in expected_pages(clicks(30)) if p["page"] == "pricing")
    (root / "tests" / "top_pages.yaml").write_text(
        "- name: pricing\n"
        "  description: hits of the pricing page, from the rollup\n"
        "  parameters: ''\n"
        "  expected_result: |\n"
        + "".join(f"    {line}\n" for line in _ndjson_lines(expected_pages(clicks(30)), pricing, expected_hits))
    )
    (root / "tests" / "clean_clicks.yaml").write_text(
        "- name: nobody\n  description: no such user\n  parameters: only_user=nobody\n  expected_result: ''\n")
    return root


def _ndjson_lines(pages, pricing, hits):
    import json

    return [json.dumps({**p, "hits": hits} if p["page"] == pricing["page"] else p, separators=(",", ":"))
            for p in pages]


def test_a_forward_project_with_a_materialized_rollup_passes_its_tests(tmp_path):
    pricing = next(p for p in expected_pages(clicks(30)) if p["page"] == "pricing")
    root = _forward_project_with_tests(tmp_path / "project", pricing["hits"])
    result = run("test", "--project", str(root), data=tmp_path / "unused")
    assert result.exit_code == 0, result.output + result.stderr
    assert "2 passed, 0 failed" in result.output


def test_a_failing_case_shows_the_row_diff_exits_1_and_update_rewrites_it(tmp_path):
    pricing = next(p for p in expected_pages(clicks(30)) if p["page"] == "pricing")
    root = _forward_project_with_tests(tmp_path / "project", pricing["hits"] + 1)
    result = run("test", "top_pages", "--project", str(root), data=tmp_path / "unused")
    assert result.exit_code == 1
    assert "FAIL" in result.output and "1 failed" in result.output
    assert f'"hits":{pricing["hits"] + 1}' in result.output and f'"hits":{pricing["hits"]}' in result.output
    updated = run("test", "top_pages", "--update", "--project", str(root), data=tmp_path / "unused")
    assert updated.exit_code == 0
    # As Forward's `tb test update` writes it (test_common.generate_test_file): yaml.safe_dump, `|` blocks,
    # a blank line before each case.
    assert (root / "tests" / "top_pages.yaml").read_text() == (
        "\n- name: pricing\n  description: hits of the pricing page, from the rollup\n  parameters: ''\n"
        "  expected_result: |\n"
        + "".join(f"    {line}\n" for line in _ndjson_lines(expected_pages(clicks(30)), pricing, pricing["hits"])))
    again = run("test", "--project", str(root), data=tmp_path / "unused")
    assert again.exit_code == 0 and "2 passed, 0 failed" in again.output


def test_exact_by_default_as_tb_test_run_and_loose_on_request(tmp_path):
    """`tb test run` compares the text: `{"a": 1}` is not `{"a":1}`, and an error's message counts.
    --loose compares rows as JSON and errors by status."""
    root = _forward_project_with_tests(tmp_path / "project", 0)
    pricing = next(p for p in expected_pages(clicks(30)) if p["page"] == "pricing")
    spaced = "".join(f"    {json.dumps(p)}\n" for p in expected_pages(clicks(30)))
    (root / "tests" / "top_pages.yaml").write_text(
        "- name: spaced\n  description: the rows, written with spaces\n  parameters: ''\n"
        f"  expected_result: |\n{spaced}"
        "- name: wrong_message\n  description: a refused call, with another message\n  parameters: x=1\n"
        "  expected_result: not this message\n  expected_http_status: 400\n")
    (root / "endpoints" / "top_pages.pipe").write_text(
        (root / "endpoints" / "top_pages.pipe").read_text().replace(
            "SQL >\n", "SQL >\n    %\n    {% if defined(x) %}{{ error('x is not taken') }}{% end %}\n", 1))
    exact = run("test", "top_pages", "--project", str(root), data=tmp_path / "unused")
    assert exact.exit_code == 1
    assert exact.output.splitlines()[0] == "FAIL     top_pages                    spaced"
    assert f'           -{json.dumps(pricing)}' in exact.output.splitlines()
    assert "           -not this message" in exact.output.splitlines()
    assert "           +x is not taken" in exact.output.splitlines()
    assert exact.output.splitlines()[-1] == "0 passed, 2 failed"
    loose = run("test", "top_pages", "--loose", "--project", str(root), data=tmp_path / "unused")
    assert loose.exit_code == 0, loose.output
    assert loose.output.splitlines() == ["PASS     top_pages                    spaced",
                                         "PASS     top_pages                    wrong_message", "2 passed, 0 failed"]


def test_unknown_pipe_names_its_missing_file(tmp_path):
    result = run("test", "nope", "--project", str(ROOT), data=tmp_path / "unused")
    assert result.exit_code == 1 and "no test file for nope" in result.stderr


# The public project this was checked against (see docs/datafiles.md); its files are not part of this repo.
WEB_ANALYTICS = os.environ.get("EVTRACK_WEB_ANALYTICS_KIT")


@pytest.mark.skipif(not WEB_ANALYTICS, reason="set EVTRACK_WEB_ANALYTICS_KIT to the starter kit's tinybird/ folder")
def test_tinybirds_web_analytics_starter_kit_passes_its_own_tests(tmp_path):
    copy = tmp_path / "kit"
    shutil.copytree(WEB_ANALYTICS, copy)  # unchanged: `evtrack test` writes nothing without --update
    result = run("test", "--project", str(copy), data=tmp_path / "unused")
    assert result.exit_code == 0, result.output + result.stderr
    assert "0 failed" in result.output
