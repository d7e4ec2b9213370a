"""experiments/mutations.py: every entry still applies to the tree, and how a test run is judged."""
from pathlib import Path

import pytest

from experiments.mutations import MUTATIONS, ROOT, Mutation, apply, judge, markdown


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_every_mutation_applies_once_and_names_existing_tests(mutation):
    text = (ROOT / mutation.file).read_text()
    assert text.count(mutation.original) == 1, f"{mutation.name}: update its snippet"
    assert mutation.mutated != mutation.original
    for test in mutation.tests:
        assert (ROOT / test.split("::")[0]).is_file(), test


def test_names_are_unique():
    names = [m.name for m in MUTATIONS]
    assert len(names) == len(set(names))


def test_judging_a_run():
    m = Mutation("m", "f.py", "a", "b", ("tests/x.py",))
    failed = "FAILED tests/x.py::test_a - assert 1 == 2\nFAILED tests/x.py::test_b\n"
    assert judge(m, 1, failed, 1.0).caught and judge(m, 1, failed, 1.0).detail == "x.py::test_a, x.py::test_b"
    assert judge(m, -11, "", 1.0).caught  # the tests crashed the interpreter
    assert not judge(m, 0, "2 passed", 1.0).caught  # nothing noticed the mutation
    assert not judge(m, 2, "ERROR collecting", 1.0).caught  # a broken run proves nothing
    assert not judge(m, 124, "timed out", 1.0).caught
    table = markdown([judge(m, 0, "", 1.0), judge(m, 1, failed, 1.0)])
    assert "1 of 2 mutations caught" in table and "**missed**" in table


def test_a_snippet_that_is_not_there_is_refused(tmp_path):
    from click import ClickException

    (tmp_path / "f.py").write_text("x = 1\nx = 1\n")
    with pytest.raises(ClickException, match="occurs 2 times"):
        apply(Path(tmp_path), Mutation("m", "f.py", "x = 1", "x = 2", ()))
