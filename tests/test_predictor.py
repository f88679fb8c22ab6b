import pytest

from raygent.predictor import Predictor, ToolEvent, action_of


def test_next_tool_probabilities_from_transitions():
    p = Predictor()
    for tools in (["list_dir", "grep", "read_file"], ["grep", "read_file"], ["grep", "run_command"]):
        for i, t in enumerate(tools):
            p.observe(ToolEvent(f"s{len(tools)}{tools[-1]}", t, 10.0 * (i + 1)))
    top = dict(p.next_tools("grep"))
    assert top == pytest.approx({"read_file": 2 / 3, "run_command": 1 / 3})
    assert p.next_tools(None)[0] == ("grep", pytest.approx(2 / 3))
    assert p.next_tools("never_seen") == []


def test_running_mean_duration_and_success_rate():
    p = Predictor()
    for d, ok in [(10.0, True), (20.0, False), (30.0, True)]:
        p.observe(ToolEvent("s", "run_command", d, ok))
    assert p.mean_duration_ms("run_command") == pytest.approx(20.0)
    assert p.stats["run_command"].success_rate == pytest.approx(2 / 3)
    assert p.mean_duration_ms("grep") is None


def test_sessions_are_separate_sequences():
    p = Predictor()
    p.observe(ToolEvent("a", "grep", 1))
    p.observe(ToolEvent("b", "write_file", 1))
    p.observe(ToolEvent("a", "read_file", 1))
    assert p.next_tools("grep") == [("read_file", 1.0)]
    p.end_session("a")
    p.observe(ToolEvent("a", "list_dir", 1))
    assert dict(p.next_tools(None)) == pytest.approx(
        {"grep": 1 / 3, "write_file": 1 / 3, "list_dir": 1 / 3}
    )


# --- issue 6: n-gram with back-off, arguments, durations, hints --------------------------------

import random  # noqa: E402

from raygent.predictor import P2Quantile, PredictedCall  # noqa: E402


def _feed(p, sid, tools):
    for t in tools:
        p.observe(ToolEvent(sid, t, 1.0))


def test_longer_context_beats_first_order():
    # After "a", the next tool depends on what came before "a": only order >= 3 can tell.
    p = Predictor(order=3)
    for i in range(10):
        _feed(p, f"x{i}", ["x", "a", "b"])
        _feed(p, f"y{i}", ["y", "a", "c"])
    _feed(p, "q", ["x", "a"])
    assert p.predict("q", k=1)[0][0] == "b"
    _feed(p, "r", ["y", "a"])
    assert p.predict("r", k=1)[0][0] == "c"
    first_order = Predictor(order=2)
    for i in range(10):
        _feed(first_order, f"x{i}", ["x", "a", "b"])
        _feed(first_order, f"y{i}", ["y", "a", "c"])
    _feed(first_order, "r", ["y", "a"])
    assert first_order.predict("r", k=2)[0][1] == pytest.approx(first_order.predict("r", k=2)[1][1])


def test_backs_off_to_session_then_global_counts():
    p = Predictor()
    _feed(p, "s0", ["grep"])
    _feed(p, "s1", ["grep", "grep", "grep", "edit"])
    # Unseen context: falls back to this session's own tools, then to the sessions using each.
    _feed(p, "s2", ["novel_tool"])
    top = p.predict("s2", k=3)
    assert top[0][0] == "novel_tool"
    assert [t for t, _ in top[1:]] == ["grep", "edit"]
    assert sum(pr for _, pr in p.predict("s2", k=10)) == pytest.approx(1.0)
    assert Predictor().predict("nobody") == []


def test_read_file_arguments_come_from_previous_grep_output():
    p = Predictor()
    for i in range(5):
        sid = f"s{i}"
        hit = f"src/mod{i}/core.py"
        p.observe(ToolEvent(sid, "grep", 2.0, arguments={"pattern": "foo"},
                            result_excerpt=f"{hit}:12: foo()\nother/x.txt:1: foo"))
        p.observe(ToolEvent(sid, "read_file", 1.0, arguments={"path": hit}, result_excerpt="..."))
    p.observe(ToolEvent("new", "grep", 2.0, arguments={"pattern": "bar"},
                        result_excerpt="lib/zeta.py:3: bar = 1\n"))
    args, conf = p.predict_arguments("new", "read_file")
    assert args == {"path": "lib/zeta.py"} and conf == pytest.approx(5 / 6)  # 5 of 5 calls, + 1
    spec = p.speculative_calls("new", threshold=0.5)
    assert spec == [PredictedCall("read_file", {"path": "lib/zeta.py"}, pytest.approx(spec[0].confidence))]
    assert spec[0].confidence >= 0.5


def test_never_speculates_a_mutating_tool():
    p = Predictor()
    for i in range(6):
        p.observe(ToolEvent(f"s{i}", "read_file", 1.0, arguments={"path": "a.py"}, result_excerpt="a.py"))
        p.observe(ToolEvent(f"s{i}", "write_file", 1.0, arguments={"path": "a.py"}, result_excerpt="ok"))
    p.observe(ToolEvent("n", "read_file", 1.0, arguments={"path": "a.py"}, result_excerpt="a.py"))
    assert p.predict("n", k=1)[0][0] == "write_file"
    assert p.predict_arguments("n", "write_file") == ({"path": "a.py"}, pytest.approx(6 / 7))
    assert p.speculative_calls("n", threshold=0.0) == [] or all(
        c.tool != "write_file" for c in p.speculative_calls("n", threshold=0.0)
    )
    # Even if the caller's read-only set is asked with a zero threshold, only its tools come out.
    assert all(c.tool in {"read_file"} for c in p.speculative_calls("n", read_only={"read_file"}, threshold=0.0))


@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_p2_quantile_tracks_the_sorted_quantile(q):
    rng = random.Random(7)
    xs = [rng.lognormvariate(3, 0.8) for _ in range(20_000)]
    est = P2Quantile(q)
    for x in xs:
        est.add(x)
    true = sorted(xs)[int(q * len(xs))]
    assert est.value() == pytest.approx(true, rel=0.05)


def test_p2_small_samples_are_exact_nearest_rank():
    est = P2Quantile(0.5)
    assert est.value() is None
    for x in [5.0, 1.0, 3.0]:
        est.add(x)
    assert est.value() == 3.0


def test_duration_stats_ewma_quantiles_and_adaptive_timeout():
    p = Predictor()
    assert p.timeout_s("run_command", default_s=30.0) == 30.0
    for i in range(100):
        p.observe(ToolEvent("s", "run_command", 100.0 + (i % 10), ok=i % 4 != 0))
    st = p.stats["run_command"]
    assert st.success_rate == pytest.approx(0.75)
    assert 100.0 <= st.ewma_duration_ms <= 109.0
    assert 105.0 <= st.p95.value() <= 109.0
    assert p.timeout_s("run_command", default_s=30.0, floor_s=0.0) == pytest.approx(2 * st.p99.value() / 1000)
    assert p.timeout_s("run_command", default_s=30.0) == 1.0  # 2 x ~109 ms is under the 1 s floor
    assert p.timeout_s("run_command", default_s=30.0, floor_s=0.0, cap_s=0.1) == 0.1
    snap = p.snapshot()["stats"]["run_command"]
    assert snap["p99_duration_ms"] == st.p99.value() and snap["calls"] == 100


def test_plan_groups_and_parallel_groups():
    p = Predictor()
    for i in range(5):
        _feed(p, f"s{i}", ["list_dir", "grep", "read_file", "write_file"])
    _feed(p, "n", ["list_dir"])
    groups = p.plan_groups("n", horizon=3, min_probability=0.1)
    assert [[t for t, _ in g] for g in groups] == [["grep", "read_file"], ["write_file"]]
    probs = [pr for g in groups for _, pr in g]
    assert probs == sorted(probs, reverse=True)
    assert Predictor.parallel_groups(["grep", "read_file", "write_file", "read_file", "grep"]) == [
        [0, 1], [2], [3, 4]
    ]


def test_snapshot_keeps_first_order_transitions():
    p = Predictor()
    _feed(p, "s", ["grep", "read_file", "grep"])
    snap = p.snapshot()
    assert snap["transitions"] == {"": {"grep": 1}, "grep": {"read_file": 1}, "read_file": {"grep": 1}}
    assert snap["order"] == 3


# --- mixture of experts: finished sessions, the session's cache, repeats ---------------------


def test_finished_sessions_identify_the_agent():
    # Two agents share the middle of their runs; only the first call tells them apart, beyond
    # the order-3 context. The finished sessions that explain this session's calls best (the
    # first agent's) outweigh the second agent's more numerous runs.
    p = Predictor()
    for i in range(4):
        runs = (("a", ["x", "m", "k", "p"]), ("b", ["y", "m", "k", "q"]), ("c", ["y", "m", "k", "q"]))
        for agent, run in runs:
            _feed(p, f"{agent}{i}", run)
            p.end_session(f"{agent}{i}")
    assert p._scores(("m", "k"), None)["q"] > p._scores(("m", "k"), None)["p"]  # the n-gram alone
    _feed(p, "new", ["x", "m", "k"])
    assert p.predict("new", k=1)[0][0] == "p"
    assert sum(pr for _, pr in p.predict("new", k=50)) == pytest.approx(1.0)


def test_a_new_tool_repeated_is_predicted_again():
    # A tool never seen before, called once: repeats are common (curl, decompile, ...), and the
    # repeat expert proposes it although no n-gram row knows what follows it.
    p = Predictor()
    for i in range(5):
        _feed(p, f"s{i}", ["t", "t", "t", "u"])
        p.end_session(f"s{i}")
    _feed(p, "x", ["brand_new"])
    assert "brand_new" in [t for t, _ in p.predict("x", k=3)]


def test_end_session_keeps_a_bounded_archive():
    p = Predictor(max_sessions=3)
    for i in range(10):
        _feed(p, f"s{i}", ["a", "b"])
        p.end_session(f"s{i}")
    assert len(p._archive) == 3
    p.end_session("never_started")  # no-op
    assert len(p._archive) == 3


def test_last_back_off_counts_sessions_not_calls():
    # One agent's long run of one tool must not swamp what most sessions do.
    p = Predictor(order=2)
    _feed(p, "long", ["edit"] * 30)
    for i in range(3):
        _feed(p, f"s{i}", ["ls", "submit"])
    _feed(p, "new", ["novel"])
    # In the global n-gram ("ngram" expert) back-off, "submit" and "ls" (3 sessions) rank
    # above "edit" (30 calls in 1 session).
    scores = p._scores(["novel"], None)
    assert scores["submit"] > scores["edit"] and scores["ls"] > scores["edit"]


@pytest.mark.parametrize(
    ("tool", "arguments", "action"),
    [
        ("bash", {"command": "python reproduce.py"}, "python"),
        ("run_command", {"command": "LANG=C sudo /usr/bin/python3.11 -m pytest"}, "python"),
        ("bash", {"command": "  ls -F"}, "ls"),
        ("bash", {"command": ""}, "bash"),
        ("bash", {}, "bash"),
        ("read_file", {"command": "python x.py"}, "read_file"),  # not a shell tool
        ("execute_bash", {"command": "pip3 install -e ."}, "pip"),
    ],
)
def test_action_of_names_the_program_a_shell_runs(tool, arguments, action):
    assert action_of(tool, arguments) == action


def test_programs_learned_across_formats_are_predicted_as_the_sessions_shell():
    # SWE-agent without function calling records "python x.py" as tool "python"; with function
    # calling the same step is bash {"command": "python x.py"}. One model serves both.
    p = Predictor()
    for i in range(4):
        sid = f"cmd{i}"
        for tool, cmd in [("create", "create x.py"), ("python", "python x.py"), ("ls", "ls -F"),
                          ("submit", "submit")]:
            p.observe(ToolEvent(sid, tool, 1.0, arguments={"command": cmd}))
        p.end_session(sid)
    sid = "fc"
    p.observe(ToolEvent(sid, "create", 1.0, arguments={"filename": "x.py"}))
    p.observe(ToolEvent(sid, "bash", 1.0, arguments={"command": "python x.py"}))
    # After create -> python comes ls; in this session ls runs through its shell.
    assert p.predict(sid, k=1)[0][0] == "bash"
    # In a command-line session the same step is tool "ls".
    p.observe(ToolEvent("cmd-new", "create", 1.0, arguments={"command": "create y.py"}))
    p.observe(ToolEvent("cmd-new", "python", 1.0, arguments={"command": "python y.py"}))
    assert p.predict("cmd-new", k=1)[0][0] == "ls"
    # Probabilities of several programs sent to one shell add up; the distribution still sums to 1.
    assert sum(pr for _, pr in p.predict(sid, k=50)) == pytest.approx(1.0)


def test_arguments_follow_the_sessions_calling_convention():
    # The same tool called with a command line by one agent and with arguments of its own by
    # another: each session is offered arguments in its own convention.
    p = Predictor()
    for i in range(3):
        p.observe(ToolEvent(f"cmd{i}", "ls", 1.0, arguments={"command": "ls -F"}))
        p.observe(ToolEvent(f"cmd{i}", "find_file", 1.0, arguments={"command": 'find_file "a.py" src'}))
        p.end_session(f"cmd{i}")
    p.observe(ToolEvent("fc0", "create", 1.0, arguments={"filename": "r.py"}))
    p.observe(ToolEvent("fc0", "find_file", 1.0, arguments={"file_name": "a.py", "dir": "src"}))
    p.end_session("fc0")
    p.observe(ToolEvent("cmd", "ls", 1.0, arguments={"command": "ls -F"}))
    assert p.predict_arguments("cmd", "find_file") == (
        {"command": 'find_file "a.py" src'}, pytest.approx(3 / 4)
    )
    p.observe(ToolEvent("fc", "create", 1.0, arguments={"filename": "r.py"}))
    assert p.predict_arguments("fc", "find_file") == (
        {"file_name": "a.py", "dir": "src"}, pytest.approx(1 / 2)
    )
    # A session that has shown no convention yet is offered the most frequent of all.
    assert p.predict_arguments("fresh", "find_file")[0] == {"command": 'find_file "a.py" src'}


def test_plan_groups_names_programs_by_the_sessions_shell():
    p = Predictor()
    for i in range(5):
        for cmd in ("ls -F", "python x.py", "rm x.py"):
            p.observe(ToolEvent(f"s{i}", "run_command", 1.0, arguments={"command": cmd}))
        p.end_session(f"s{i}")
    p.observe(ToolEvent("now", "run_command", 1.0, arguments={"command": "ls -F"}))
    groups = p.plan_groups("now", horizon=2, min_probability=0.1)
    # python then rm, both through the session's shell (a mutating tool: one call per group).
    assert groups and all(tool == "run_command" for g in groups for tool, _ in g)
    assert [len(g) for g in groups] == [1, 1]
    assert p.next_tools("ls")[0][0] == "python"
