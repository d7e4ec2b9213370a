"""docs/results.md's writer: each section's command runs into its own folder, the page puts its Markdown under
the command that made it, reuse keeps what a folder has, and a command that writes nothing is an error."""
from __future__ import annotations

import sys

import pytest

from experiments.results import Section, page, run_section
from pspcore.errors import InputError, PSPError


def writer(name: str, text: str) -> Section:
    code = f"import pathlib,sys; p=pathlib.Path(sys.argv[1]); p.parent.mkdir(parents=True); p.write_text({text!r})"
    return Section(name, f"Title {name}", "What it shows.", ("python", "-c", code, "{work}/out.md"), ("out.md",))


def test_sections_run_and_the_page_shows_each_table_under_its_command(tmp_path, monkeypatch):
    monkeypatch.setattr("experiments.demo.tool", lambda name: sys.executable if name == "python" else name)
    work = tmp_path / "runs"
    first, second = writer("a", "# Fragment\n| x |\n|---|\n| 1 |\n"), writer("b", "- figure 2\n")
    for section in (first, second):
        run_section(section, work, reuse=False)
    text = page([first, second], work)
    assert text.index("## Title a") < text.index("| 1 |") < text.index("## Title b") < text.index("- figure 2")
    assert "### Fragment" in text and "\n# Fragment" not in text  # a fragment's title goes under the section's
    assert text.count("python -c") == 2 and "{work}" not in text  # the command, with its real folder
    named = writer("c", f"- images in {work / 'c' / 'val.txt'}\n")  # a fragment naming its absolute folder
    run_section(named, work, reuse=False)
    monkeypatch.chdir(tmp_path)
    text = page([named], work)
    assert [line for line in text.splitlines() if line.startswith("- images")] == ["- images in runs/c/val.txt"]


def test_reuse_keeps_outputs_and_a_silent_command_fails(tmp_path, monkeypatch):
    monkeypatch.setattr("experiments.demo.tool", lambda name: sys.executable if name == "python" else name)
    work = tmp_path / "runs"
    run_section(writer("a", "first\n"), work, reuse=False)
    run_section(writer("a", "second\n"), work, reuse=True)
    assert (work / "a" / "out.md").read_text() == "first\n"
    silent = Section("s", "Silent", "", ("python", "-c", "pass"), ("out.md",))
    with pytest.raises(InputError, match="wrote no out.md"):
        run_section(silent, work, reuse=False)
    failing = Section("f", "Fails", "", ("python", "-c", "raise SystemExit(3)"), ("out.md",))
    with pytest.raises(PSPError, match="exit code 3"):
        run_section(failing, work, reuse=False)


def test_a_section_not_run_here_keeps_its_text_from_the_page(tmp_path, monkeypatch):
    """--only NAME on a machine whose work folder has only NAME: the other sections stay as the page had them."""
    monkeypatch.setattr("experiments.demo.tool", lambda name: sys.executable if name == "python" else name)
    work = tmp_path / "runs"
    first, second, third = writer("a", "new a\n"), writer("b", "new b\n"), writer("c", "new c\n")
    for section in (first, second):
        run_section(section, work, reuse=False)
    before = page([first, second], work).replace("new a", "old a").replace("new b", "old b\n## not a section")
    (work / "b" / "out.md").unlink()
    text = page([first, second, third], work, before)
    assert "new a" in text and "old a" not in text  # rerun: from its outputs
    assert "old b\n## not a section" in text and text.count("## Title b") == 1  # kept whole, heading once
    assert "Title c" not in text  # neither run nor on the page before
    assert text.index("## Title a") < text.index("## Title b")
