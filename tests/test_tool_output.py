"""Tool output read by its shape: test runs, tracebacks, listings, source files, harness tags."""

from __future__ import annotations

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from context_distill.distillers import ExtractiveDistiller
from context_distill.distillers._structured import summarize_output, unwrap
from context_distill.types import Group

PYTEST_FAILURE = """\
============================= test session starts ==============================
platform linux -- Python 3.11.4, pytest-7.4.0, pluggy-1.2.0
rootdir: /repo
collected 12 items

tests/test_api.py ..F.........                                           [100%]

=================================== FAILURES ===================================
__________________________________ test_login __________________________________

    def test_login():
        client = make_client()
>       assert client.login("bob")["token"] == "abc"
E       KeyError: 'token'

tests/test_api.py:14: KeyError
=========================== short test summary info ============================
FAILED tests/test_api.py::test_login - KeyError: 'token'
========================= 1 failed, 11 passed in 0.12s =========================
"""

UNITTEST_FAILURE = """\
Creating test database for alias 'default'...
.........F..............
======================================================================
FAIL: test_load_empty_dir (migrations.test_loader.LoaderTests)
----------------------------------------------------------------------
Traceback (most recent call last):
  File "/testbed/tests/migrations/test_loader.py", line 197, in test_load_empty_dir
    "App missing __init__.py in migrations module not in unmigrated apps."
AssertionError: 'migrations' not found in {'staticfiles', 'messages'}

----------------------------------------------------------------------
Ran 24 tests in 0.426s

FAILED (failures=1)
Destroying test database for alias 'default'...
"""


def facts_of(*messages: BaseMessage) -> list[str]:
    ids = tuple(m.id or f"m{i}" for i, m in enumerate(messages))
    (result,) = ExtractiveDistiller().distill([Group("t", tuple(messages), ids, tokens=100)])
    return [fact.text for fact in result.facts]


def test_a_pytest_failure_keeps_the_failing_id_error_and_totals_not_the_quoted_def() -> None:
    summary = summarize_output(PYTEST_FAILURE)
    assert "tests/test_api.py::test_login - KeyError: 'token'" in summary
    assert "E KeyError: 'token'" in summary
    assert "tests/test_api.py:14: KeyError" in summary
    assert "1 failed, 11 passed" in summary
    assert "def test_login" not in summary  # quoted source, not a definition of the output
    assert len(summary) < len(PYTEST_FAILURE) / 3


def test_a_unittest_failure_keeps_the_test_the_error_and_the_counts() -> None:
    summary = summarize_output(UNITTEST_FAILURE)
    assert "FAIL: test_load_empty_dir (migrations.test_loader.LoaderTests)" in summary
    assert "AssertionError: 'migrations' not found" in summary
    assert "Ran 24 tests" in summary and "FAILED (failures=1)" in summary
    assert "Creating test database" not in summary


def test_a_traceback_keeps_errors_and_frames_with_the_entry_source() -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File "reproduce_issue.py", line 72, in <module>\n'
        "    view_report = Permission.objects.get(content_type=report_ct)\n"
        '  File "/testbed/django/db/models/query.py", line 407, in get\n'
        "    raise self.model.DoesNotExist(\n"
        "django.contrib.auth.models.DoesNotExist: Permission matching query does not exist.\n"
    )
    summary = summarize_output(text)
    assert summary.startswith("django.contrib.auth.models.DoesNotExist: Permission matching")
    assert "reproduce_issue.py:72 <module>: view_report = Permission.objects.get(" in summary
    assert "content_type=report_ct" in summary
    assert "/testbed/django/db/models/query.py:407 get" in summary


def test_a_numbered_listing_keeps_its_range_and_lines_with_their_numbers() -> None:
    text = "\n".join(
        [
            "  1205\tdef _batched_insert(self, objs, fields, batch_size):",
            '  1206\t    """',
            "  1207\t    Helper method for bulk_create().",
            '  1208\t    """',
            "  1209\t",
            "  1210\t    ops = connections[self.db].ops",
            "  1211\t    return ops",
        ]
    )
    summary = summarize_output(text)
    assert summary.startswith("lines 1205-1211")
    assert "1205: def _batched_insert(self, objs, fields, batch_size):" in summary
    assert "1210: ops = connections[self.db].ops" in summary
    assert "1209" not in summary  # a blank line says nothing


def test_grep_hits_are_kept_with_their_numbers_and_grouped_by_file() -> None:
    single = (
        "463:    def has_add_permission(self, request):\n"
        "2114:    def has_add_permission(self, request, obj):"
    )
    summary = summarize_output(single)
    assert "463: def has_add_permission(self, request):" in summary
    assert "2114: def has_add_permission(self, request, obj):" in summary
    many = "\n".join(
        [
            "django/db/models/query.py:407:        clone = self.filter(*args)",
            "django/db/models/query.py:421:    def create(self, **kwargs):",
            "django/db/models/base.py:741:    def save(self, force_insert=False):",
        ]
    )
    summary = summarize_output(many)
    assert summary.count("django/db/models/query.py") == 1
    assert "django/db/models/query.py: 407: clone = self.filter(*args); 421: def create" in summary
    assert "django/db/models/base.py: 741: def save(self, force_insert=False):" in summary


def test_a_file_listing_keeps_every_name_as_printed() -> None:
    ls_long = "\n".join(
        [
            "total 176",
            "drwxrwxrwx   1 root root  4096 Oct 24  2024 .",
            "drwxr-xr-x   1 root root  4096 Nov 18 23:35 ..",
            "-rw-r--r--   1 root root   807 Oct 24  2024 .editorconfig",
            "-rw-r--r--   1 root root   369 Oct 24  2024 package.json",
            "drwxrwxrwx 212 root root 12288 Oct 24  2024 tests",
        ]
    )
    summary = summarize_output(ls_long)
    assert summary == "3 names; .editorconfig, package.json, tests"
    find = "\n".join(
        f"django/db/migrations/{name}.py" for name in ("loader", "questioner", "writer", "state")
    )
    summary = summarize_output(find)
    assert "django/db/migrations/questioner.py" in summary  # a path stays whole


def test_a_source_file_is_reduced_to_its_defined_names_with_line_numbers() -> None:
    source = "\n".join(
        [
            "import os",
            "",
            "DEFAULT_TIMEOUT = 30",
            "",
            "class Client:",
            "    def __init__(self, url):",
            "        self.url = url",
            "",
            "    def login(self, user):",
            "        return {'token': os.environ['TOKEN']}",
        ]
    )
    summary = summarize_output(source)
    assert summary == (
        "10 lines; 3: DEFAULT_TIMEOUT = 30; 5: class Client; 6: def __init__(self, url); "
        "9: def login(self, user)"
    )


def test_many_definitions_that_differ_only_in_numbers_are_written_once() -> None:
    source = "import os\n" + "\n".join(f"def helper_{i}(x):\n    return x" for i in range(30))
    summary = summarize_output(source)
    assert "def helper_0(x)" in summary and "def helper_29(x)" in summary
    assert "def helper_15(x)" not in summary
    assert "28 alike" in summary


def test_harness_wrapper_tags_go_and_a_failing_code_stays() -> None:
    assert unwrap("<returncode>0</returncode>\n<output>\nvalidators.py\n</output>") == (
        "validators.py"
    )
    assert "returncode 1" in unwrap("<returncode>1</returncode>\n<output>\n</output>")
    warned = (
        "<warning>\nThe output of your last command was too long.\nPlease try again.\n"
        "</warning><output_head>\nimport os\n</output_head>"
    )
    text = unwrap(warned)
    assert "too long" in text and "Please try again" not in text and "<output_head>" not in text


def test_a_command_that_printed_nothing_is_its_call_alone() -> None:
    call = AIMessage(
        "", id="a", tool_calls=[{"name": "bash", "args": {"command": "mkdir app"}, "id": "c"}]
    )
    result = ToolMessage("<returncode>0</returncode>\n<output>\n</output>", tool_call_id="c")
    assert facts_of(call, result.model_copy(update={"id": "r"})) == ["bash(command=mkdir app)"]


def test_a_long_script_argument_keeps_its_first_line() -> None:
    script = "cat <<'EOF' > reproduce_issue.py\nimport os\n" + "\n".join(
        f"def step_{i}():\n    return {i}" for i in range(40)
    )
    call = AIMessage(
        "", id="a", tool_calls=[{"name": "bash", "args": {"command": script}, "id": "c"}]
    )
    (fact,) = facts_of(call)
    assert fact.startswith("bash(command=cat <<'EOF' > reproduce_issue.py <")


def test_fenced_code_in_a_message_is_read_as_code_not_prose() -> None:
    text = (
        "THOUGHT: The check is here:\n```python\n"
        "2114    def has_add_permission(self, request, obj):\n"
        "2115        if self.opts.auto_created:\n```\nI will change it."
    )
    (fact,) = facts_of(AIMessage(text, id="a"))
    assert "2114: def has_add_permission(self, request, obj):" in fact
    assert "change" in fact
