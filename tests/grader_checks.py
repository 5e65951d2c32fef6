"""Assertions shared by the tests of the student grader (``part52_grokking_and_modular_arithmetic.tests``)."""

from __future__ import annotations

import pytest

from part52_grokking_and_modular_arithmetic import tests as grader  # never import the test_* names directly


def stub(*args, **kwargs):
    """An exercise not done yet."""
    raise NotImplementedError()


def expect_failure(call, *fragments: str) -> str:
    """``call()`` raises a GraderError whose short message contains every fragment; returns the message."""
    with pytest.raises(grader.GraderError) as info:
        call()
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in grader message:\n{msg}"
    assert len(msg) < 1200, "grader messages must stay short (no tensor dumps)"
    assert "tensor(" not in msg
    return msg


def expect_pass(call, name: str, capsys) -> None:
    """``call()`` prints the ✅ line and returns None (a grader cell shows only the verdict)."""
    assert call() is None
    assert f"✅ {name}: all checks passed" in capsys.readouterr().out


def expect_not_implemented(call, name: str, capsys) -> None:
    assert call() is None
    assert f"⏳ {name}: not implemented yet" in capsys.readouterr().out


def expect_right_answers_pass_and_stub_waits(grade, name: str, capsys, *right_answers) -> None:
    """``grade(answer)`` passes for every right answer and reports the stub as not implemented yet."""
    for answer in right_answers:
        expect_pass(lambda answer=answer: grade(answer), name, capsys)
    expect_not_implemented(lambda: grade(stub), name, capsys)
