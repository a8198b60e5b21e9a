"""The check of the CLI's expected failures, shared by the tests of each command (pytest puts
this folder on sys.path)."""


def one_line_error(err: str, command: str, *fragments: str) -> str:
    """Assert that ``err`` (captured stderr) is exactly one line ``fastgp COMMAND: error: ...``
    holding every fragment and no traceback; return that line."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"fastgp {command}: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], err
    return lines[0]
