"""Isolation: one thread's views, search, recall, stats and facts never show another's.

Threads share one archive file, a vocabulary, message ids and even id patterns
that SQL ``LIKE`` or case folding would confuse. And no SQL in the package is built
from user data: every statement is a constant, parameterised with ``?``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from invariants import REPO_ROOT, Session, cheap_count, check_db
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from context_distill import ContextDistiller, SQLiteMemoryStore
from context_distill.tools import make_recall_tool

# Ids that LIKE patterns, case folding, prefixes or trailing spaces would mix up.
TRICKY = ["alpha", "Alpha", "alpha%", "alph_", "alpha ", "alpha/1", "alpha'1", "al"]


@pytest.fixture
def engine(tmp_path: Path) -> ContextDistiller:
    return ContextDistiller(
        SQLiteMemoryStore(tmp_path / "shared.db"), budget_tokens=300, token_counter=cheap_count
    )


@pytest.fixture(scope="module")
def filled(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ContextDistiller, dict[str, Session], Path]]:
    """One archive filled once for the tests that only read it."""
    path = tmp_path_factory.mktemp("isolation") / "shared.db"
    engine = ContextDistiller(SQLiteMemoryStore(path), budget_tokens=300, token_counter=cheap_count)
    sessions = _fill(engine)
    yield engine, sessions, path
    engine.store.close()


def _fill(engine: ContextDistiller) -> dict[str, Session]:
    sessions = {}
    for n, tid in enumerate(TRICKY):
        session = Session(engine, tid, 100 + n)
        session.tag = f"iso{n}"  # unique word per thread, same vocabulary otherwise
        session.history = [
            HumanMessage(f"zq{session.tag}task shared task words invoice", id="task"),
        ]
        sessions[tid] = session
    for _ in range(12):
        for session in sessions.values():
            _, problems = session.step()
            assert not problems, problems[:3]
    return sessions


def test_views_search_stats_and_facts_stay_in_their_thread(
    filled: tuple[ContextDistiller, dict[str, Session], Path],
) -> None:
    engine, sessions, path = filled
    store = engine.store
    assert sorted(store.threads()) == sorted(TRICKY)
    for tid, session in sessions.items():
        mine = f"zq{session.tag}"
        others = [f"zq{s.tag}x" for t, s in sessions.items() if t != tid]
        assert session.last is not None
        view_text = "\n".join(str(m.content) for m in session.last.view)
        assert not [o for o in others if o in view_text], f"{tid!r}: view shows another thread"
        own_ids = {m.id for m in session.history}
        for message in session.last.view:
            assert message.id in own_ids or message.id == "context-distill-memory"
        # Search within the thread: only its own hits, also for shared words.
        for word in ("invoice", "task", "search", mine, *others[:3]):
            hits = store.search(word, thread_id=tid, limit=1000)
            assert all(hit.thread_id == tid for hit in hits), (tid, word)
            for hit in hits:
                assert not [o for o in others if o in hit.text], (tid, word, hit.text)
        gone = [m for m in session.history if m.id not in {v.id for v in session.last.view}]
        word = str(gone[0].content).split()[0]
        assert word.startswith(mine)
        assert [h for h in store.search(word, thread_id=tid) if h.message_id == gone[0].id]
        # Facts and their sources.
        for fact in store.facts(tid):
            assert not [o for o in others if o in fact.text]
            assert set(fact.source_ids) <= own_ids
        # Stats count only this thread: compare with what the thread itself archived.
        stats = store.stats(tid)
        assert stats["threads"] == 1
        archived = {m.id for m in session.history} - {m.id for m in session.last.view}
        assert stats["messages_distilled"] == len(archived)
        assert engine.stats(tid).thread_id == tid
        # The same message id ("task") exists in every thread: each gets its own.
        snapshot = store.load_thread(tid)
        assert snapshot.thread_id == tid
        for ref, message in store.get_messages(tid, ids=["task"]):
            assert mine in str(message.content), (tid, ref)
    total = store.stats()
    assert total["threads"] == len(TRICKY)
    assert total["messages_distilled"] == sum(store.stats(t)["messages_distilled"] for t in TRICKY)
    assert not check_db(path)


def test_archive_numbers_are_per_thread(
    filled: tuple[ContextDistiller, dict[str, Session], Path],
) -> None:
    """``#n`` in one thread's memory never resolves to another thread's message."""
    engine, sessions, _ = filled
    store = engine.store
    for tid in sessions:
        others = [f"zq{s.tag}x" for t, s in sessions.items() if t != tid]
        got = store.get_messages(tid, refs=list(range(1, 400)))
        assert got
        for _, message in got:
            assert not [o for o in others if o in str(message.content)], tid
        # Ids of other threads' messages are not found here.
        other_ids = [m.id for t, s in sessions.items() if t != tid for m in s.history[1:4]]
        assert store.get_messages(tid, ids=other_ids) == []


def test_recall_tool_never_crosses_threads(
    filled: tuple[ContextDistiller, dict[str, Session], Path],
) -> None:
    engine, sessions, _ = filled
    tool = make_recall_tool(engine)
    for tid, session in sessions.items():
        others = [f"zq{s.tag}x" for t, s in sessions.items() if t != tid]
        config = {"configurable": {"thread_id": tid}}
        for query in ("invoice", "#1", "#1-#40", "task", *others[:2], f"zq{session.tag}x1x1"):
            answer = tool.invoke({"query": query}, config)
            leaked = [o for o in others if o in answer.replace(query, "")]
            assert not leaked, f"recall in {tid!r} for {query!r} shows {leaked}"


def test_deleting_a_thread_leaves_the_others(engine: ContextDistiller, tmp_path: Path) -> None:
    _fill(engine)
    before = {tid: engine.store.stats(tid) for tid in TRICKY}
    engine.forget("alpha%", archive=True)
    assert engine.store.stats("alpha%")["messages_archived"] == 0
    for tid in TRICKY:
        if tid != "alpha%":
            assert engine.store.stats(tid) == before[tid], tid
    assert not check_db(tmp_path / "shared.db")


def test_two_engines_same_file_different_threads(tmp_path: Path) -> None:
    a = ContextDistiller(SQLiteMemoryStore(tmp_path / "two.db"), budget_tokens=300)
    b = ContextDistiller(SQLiteMemoryStore(tmp_path / "two.db"), budget_tokens=300)
    history: list[BaseMessage] = [HumanMessage("task", id="t")]
    for i in range(20):
        history.append(AIMessage(f"same words in both threads number {i} " * 3, id=f"a{i}"))
        a.update("one", history)
        b.update("two", history)
    for engine, tid, other in ((a, "one", "two"), (b, "two", "one")):
        view = engine.update(tid, history).view
        memory = [m for m in view if m.id == "context-distill-memory"]
        assert memory
        assert all(hit.thread_id == tid for hit in engine.store.search("words", thread_id=tid))
        assert engine.store.stats(tid)["facts"] == engine.store.stats(other)["facts"]
    assert not check_db(tmp_path / "two.db")


# -- no SQL from user data ---------------------------------------------------------------

SQL_WORDS = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|WHERE|MATCH|VALUES)\b"
)
SQL_CALLS = {"execute", "executemany", "executescript", "_rows", "query", "execute_returning_dicts"}


class _Scope:
    """Assignments in one function, to tell where an interpolated name comes from."""

    def __init__(self, func: ast.AST, parent: _Scope | None = None) -> None:
        self.parent = parent  # the enclosing function's scope (names a closure reads)
        self.values: dict[str, list[ast.AST]] = {}
        self.safe_params: set[str] = set()
        self.wrapper_params: set[str] = set()
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)) and func.name in SQL_CALLS:
            self.wrapper_params = {a.arg for a in func.args.args}
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            args = func.args
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                note = getattr(arg, "annotation", None)
                if isinstance(note, ast.Name) and note.id in ("int", "float", "bool"):
                    self.safe_params.add(arg.arg)
        for node in ast.walk(func):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    self._bind(target, node.value)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
                self._bind(node.target, node.value)
            elif isinstance(node, (ast.For, ast.comprehension)):
                self._bind(node.target, _Elements(node.iter))

    def _bind(self, target: ast.AST, value: ast.AST) -> None:
        if isinstance(target, ast.Name):
            self.values.setdefault(target.id, []).append(value)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for index, element in enumerate(target.elts):
                self._bind(element, _Item(value, index))


class _Elements(ast.AST):
    """The elements of an iterable (for a loop variable)."""

    def __init__(self, iterable: ast.AST) -> None:
        super().__init__()
        self.iterable = iterable


class _Item(ast.AST):
    """Element ``index`` of a tuple value (for tuple unpacking)."""

    def __init__(self, value: ast.AST, index: int) -> None:
        super().__init__()
        self.value = value
        self.index = index


def _safe(node: ast.AST, scope: _Scope, seen: frozenset[str] = frozenset()) -> bool:
    """Whether a string expression can only hold text written in the source code."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (str, int, float)) or node.value is None
    if isinstance(node, ast.JoinedStr):
        return all(_safe(v, scope, seen) for v in node.values)
    if isinstance(node, ast.FormattedValue):
        return _safe(node.value, scope, seen)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _safe(node.left, scope, seen) and _safe(node.right, scope, seen)
    if isinstance(node, ast.IfExp):
        return _safe(node.body, scope, seen) and _safe(node.orelse, scope, seen)
    if isinstance(node, (ast.Tuple, ast.List)):
        return all(_safe(e, scope, seen) for e in node.elts)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id
        in (
            "int",
            "float",
            "len",
        )
    ):
        return True  # numbers cannot carry SQL
    if isinstance(node, ast.Call) and _callee(node) in ("Identifier", "Literal"):
        return True  # psycopg quotes whatever these hold: a name, or a value
    if isinstance(node, ast.Call) and _callee(node) in SQL_COMPOSERS:
        # psycopg's sql.SQL and the PostgreSQL store's Names.q: composed SQL is safe
        # when every piece it is composed from is.
        return all(_safe(a, scope, seen) for a in node.args) and all(
            _safe(k.value, scope, seen) for k in node.keywords
        )
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("join", "format")
        and isinstance(node.func.value, ast.Call)
        and _callee(node.func.value) in SQL_COMPOSERS
    ):
        return (
            _safe(node.func.value, scope, seen)
            and all(_safe(a, scope, seen) for a in node.args)
            and all(_safe(k.value, scope, seen) for k in node.keywords)
        )
    if isinstance(node, ast.ListComp):
        return _safe(node.elt, scope, seen)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "join"
        and isinstance(node.func.value, ast.Constant)
    ):
        return all(_safe(a, scope, seen) for a in node.args)  # ", ".join("?" * n)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        # A constant string repeated: "?" * n (the count cannot add text of its own).
        return any(
            isinstance(side, ast.Constant) and isinstance(side.value, str)
            for side in (node.left, node.right)
        )
    if isinstance(node, _Elements):
        return _safe(node.iterable, scope, seen)
    if isinstance(node, _Item):
        value = node.value
        if isinstance(value, ast.IfExp):
            return _safe(_Item(value.body, node.index), scope, seen) and _safe(
                _Item(value.orelse, node.index), scope, seen
            )
        if isinstance(value, (ast.Tuple, ast.List)) and node.index < len(value.elts):
            return _safe(value.elts[node.index], scope, seen)
        return False
    if isinstance(node, ast.Name):
        if node.id in scope.safe_params:
            return True
        if node.id in scope.wrapper_params:
            return True  # SQL handed to a wrapper whose own call sites are checked
        if node.id in seen:
            return False
        if node.id not in scope.values:  # a closure: the enclosing function's name
            return scope.parent is not None and _safe(node, scope.parent, seen)
        return all(_safe(v, scope, seen | {node.id}) for v in scope.values[node.id])
    return False


SQL_COMPOSERS = {"SQL", "Identifier", "Literal", "q"}


def _callee(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _scope_of(func: ast.AST, enclosing: dict[int, ast.AST]) -> _Scope:
    """The scope of ``func``, chained to the scopes of the functions around it."""
    outer = enclosing.get(id(func))
    return _Scope(func, None if outer is None else _scope_of(outer, enclosing))


def unsafe_sql(source: str, name: str = "<source>") -> list[str]:
    """Places where SQL text is built from something other than source-code constants."""
    tree = ast.parse(source)
    found: list[str] = []
    functions = [
        n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    owner: dict[int, ast.AST] = {}
    enclosing: dict[int, ast.AST] = {}  # function -> the function around it
    for func in functions:  # innermost function wins: walk order is outer first
        for node in ast.walk(func):
            owner[id(node)] = func
            if node is not func and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                enclosing[id(node)] = func
    for node in ast.walk(tree):
        built = None
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            if SQL_WORDS.search(text):
                built = node
        elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
            parts = [p for p in (node.left, node.right) if isinstance(p, ast.Constant)]
            if any(isinstance(p.value, str) and SQL_WORDS.search(p.value) for p in parts):
                built = node
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format"
            and isinstance(node.func.value, ast.Constant)
            and isinstance(node.func.value.value, str)
            and SQL_WORDS.search(node.func.value.value)
        ):
            built = node
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SQL_CALLS
            and node.args
            and isinstance(node.args[0], (ast.Name, ast.Call))
        ):
            built = node.args[0]  # SQL in a variable or made by a call: where from?
        if built is None:
            continue
        scope = _scope_of(owner.get(id(node), tree), enclosing)
        if isinstance(node, ast.Call) and node.func.attr == "format":  # type: ignore[union-attr]
            ok = all(_safe(a, scope) for a in node.args) and all(
                _safe(k.value, scope) for k in node.keywords
            )
        else:
            ok = _safe(built, scope)
        if not ok:
            found.append(f"{name}:{node.lineno}: {ast.unparse(node)[:120]}")
    return found


def test_no_sql_in_the_package_is_built_from_user_data() -> None:
    sources = sorted((REPO_ROOT / "src" / "context_distill").rglob("*.py"))
    assert any(p.name == "sqlite.py" and p.parent.name == "store" for p in sources)
    problems = []
    for path in sources:
        problems.extend(unsafe_sql(path.read_text(), str(path.relative_to(REPO_ROOT))))
    assert not problems, "SQL built from non-constant text:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "snippet",
    [
        "def f(conn, tid):\n    conn.execute(f\"SELECT * FROM t WHERE id = '{tid}'\")",
        'def f(conn, tid):\n    conn.execute("SELECT * FROM t WHERE id = \'" + tid + "\'")',
        "def f(conn, tid):\n    conn.execute(\"SELECT * FROM t WHERE id = '%s'\" % tid)",
        "def f(conn, tid):\n    conn.execute(\"SELECT * FROM t WHERE id = '{}'\".format(tid))",
        "def f(conn, tid):\n    sql = f\"DELETE FROM t WHERE id = '{tid}'\"\n    conn.execute(sql)",
        "def f(conn, table):\n    conn.execute(f'DROP TABLE {table}')",
        "def f(self, tid):\n    self._rows(f\"SELECT 1 FROM t WHERE id = '{tid}'\")",
        "def f(conn, ids):\n    marks = ', '.join(ids)\n"
        "    conn.execute(f'SELECT 1 FROM t WHERE id IN ({marks})')",
        "def f(conn, q):\n    where = 'WHERE x = ' + q\n"
        "    conn.execute(f'SELECT 1 FROM t {where}')",
        "def f(cur, tid):\n    cur.execute(sql.SQL(f\"SELECT 1 FROM t WHERE id = '{tid}'\"))",
        "def f(self, text):\n    self._rows(self._n.q(text))",
        "def f(cur, tid):\n    cur.execute(sql.SQL('SELECT {}').format(sql.SQL(tid)))",
        "def f(cur, tid):\n    def body():\n        cur.execute(f'DELETE FROM t WHERE id = {tid}')",
    ],
)
def test_the_sql_check_catches_built_sql(snippet: str) -> None:
    assert unsafe_sql(snippet), f"not caught: {snippet}"


@pytest.mark.parametrize(
    "snippet",
    [
        "def f(conn, tid):\n    conn.execute('SELECT * FROM t WHERE id = ?', (tid,))",
        "def f(conn, tid):\n    for table in ('a', 'b'):\n"
        "        conn.execute(f'DELETE FROM {table} WHERE id = ?', (tid,))",
        "def f(conn, tid):\n    where, p = ('WHERE id = ?', (tid,)) if tid else ('', ())\n"
        "    conn.execute(f'SELECT 1 FROM t {where}', p)",
        "def f(conn, n: int):\n    conn.execute(f'PRAGMA user_version = {n}')",
        "def _rows(self, sql, params):\n    return self.conn.execute(sql, params)",
        "def f(conn, ids):\n    marks = ', '.join('?' * len(ids))\n"
        "    conn.execute(f'SELECT 1 FROM t WHERE id IN ({marks})', ids)",
        "def f(cur, terms, tid):\n"
        "    match = sql.SQL(' && ').join([q('to_tsquery(%s)') for _ in terms])\n"
        "    statement = q('SELECT 1 FROM {t} WHERE {match}', match=match)\n"
        "    cur.execute(statement, (tid,))",
        "def f(cur, schema):\n"
        "    cur.execute(sql.SQL('DROP SCHEMA {}').format(sql.Identifier(schema)))",
        "def _rows(self, query, params):\n    def body(cur):\n        cur.execute(query, params)\n"
        "    return self.run(body)",
    ],
)
def test_the_sql_check_accepts_parameterised_sql(snippet: str) -> None:
    assert not unsafe_sql(snippet)
