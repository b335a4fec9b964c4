"""Several endpoints of one model: least-loaded routing, a dead endpoint taken out (no request lost) and
tried again later. Scripted servers for the logic; two real embedded servers, one killed mid-run."""

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import dspy
import pytest
from conftest import fake_config
from fake_openai import FakeOpenAI

from lbt_dspy.config import M1Config
from lbt_dspy.errors import LbtError
from lbt_dspy.m1 import run_m1
from lbt_dspy.models import ModelPool, OpenAICompatEngine
from lbt_dspy.models.router import RoutedEngine


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "sk-test-router")


def entry(bases):
    return {"model_type": "openai", "model_cfg": {"model": "fake", "api_base": bases, "api_key_env": "FAKE_API_KEY"}}


def ask(lm, n, concurrency=8, tag="q"):
    q = "Tom has {} apples. Tom buys 2 more apples. How many apples does Tom have now?"
    with ThreadPoolExecutor(concurrency) as ex:
        return list(ex.map(lambda i: lm(f"[[Question]]: {q.format(i)} ({tag})")[0], range(n)))


def kill(srv):
    """The scripted server stops accepting: new connections are refused."""
    srv.httpd.shutdown()
    srv.httpd.server_close()


def test_a_list_of_api_bases_routes_and_one_stays_plain(fake_server):
    with ModelPool(cache=False) as pool:
        assert isinstance(pool.lm(entry([fake_server.api_base])).engine, OpenAICompatEngine)
        with FakeOpenAI() as other:
            lm = pool.lm(entry([fake_server.api_base, other.api_base]))
            assert isinstance(lm.engine, RoutedEngine)
            assert "sk-test" not in repr(lm.engine)
            ask(lm, 16)
            assert fake_server.requests and other.requests  # both replicas served
        for bad in ([], [fake_server.api_base] * 2, [fake_server.api_base, 3]):
            with pytest.raises(LbtError, match="api_base"):
                pool.lm(entry(bad))


def test_the_least_loaded_replica_takes_more():
    with FakeOpenAI(delay=0.4) as slow, FakeOpenAI(delay=0.02) as fast, ModelPool(cache=False) as pool:
        lm = pool.lm(entry([slow.api_base, fast.api_base]))
        ask(lm, 48, concurrency=6)
        assert len(fast.requests) >= 2 * len(slow.requests) > 0
        assert all(ep["in_flight"] == 0 for ep in lm.engine.status())


def test_a_killed_replica_loses_no_request_of_an_m1_run(tmp_path):
    with FakeOpenAI(delay=0.05) as a, FakeOpenAI(delay=0.05) as b:
        cfg = fake_config(a.api_base, concurrency=4, num_retries=0)  # no DSPy retry: failover alone
        cfg["teacher_model_cfg"] = entry([a.api_base, b.api_base])
        cfg["student_model_cfgs"][0]["model_cfg"]["api_base"] = [a.api_base, b.api_base]

        def killer():
            while len(b.requests) < 6:
                time.sleep(0.01)
            kill(b)
        t = threading.Thread(target=killer)
        t.start()
        calls = run_m1(M1Config.from_dict(cfg), tmp_path / "run", progress=False)
        t.join()
    assert calls["failed"] == 0 and (calls["greedy"], calls["teach"], calls["exam"]) == (3, 6, 12)
    assert len(a.requests) + len(b.requests) >= 21 and len(b.requests) < 21
    keys = [json.loads(x)["key"] for x in (tmp_path / "run" / "exam.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 12


def test_a_dropped_connection_is_sent_to_another_replica_at_once():
    with FakeOpenAI() as a, FakeOpenAI(faults=["drop"] * 4) as b, ModelPool(cache=False, num_retries=0) as pool:
        lm = pool.lm(entry([a.api_base, b.api_base]))
        out = ask(lm, 12, concurrency=4)
        assert len(out) == 12 and all("[[Final Answer]]" in x for x in out)
        st = {e["api_base"]: e for e in lm.engine.status()}
        assert st[b.api_base]["failed"] >= 1


def test_a_dead_replica_is_taken_out_then_tried_again_after_its_cooldown():
    with FakeOpenAI() as a, FakeOpenAI(faults=["drop"]) as b:
        engine = RoutedEngine("fake", [a.api_base, b.api_base], cooldown=0.5, api_key="x")
        lm = dspy.LM("openai/fake", engine=engine, cache=False, num_retries=0)
        ask(lm, 2, concurrency=1, tag="first")  # the rotation reaches b, whose connection drops
        assert len(b.requests) == 1 and engine.status()[1]["up"] is False
        ask(lm, 6, concurrency=1, tag="cooling")
        assert len(b.requests) == 1  # out of the rotation while it cools down
        time.sleep(0.6)
        ask(lm, 6, concurrency=1, tag="later")
        assert len(b.requests) > 1 and engine.status()[1]["up"] and engine.status()[1]["served"] >= 1


def test_requests_failing_together_on_a_dead_replica_do_not_lengthen_its_cooldown():
    with FakeOpenAI(delay=0.05) as a, FakeOpenAI() as b:
        kill(b)  # connections refused from the start
        engine = RoutedEngine("fake", [a.api_base, b.api_base], cooldown=30, api_key="x")
        lm = dspy.LM("openai/fake", engine=engine, cache=False, num_retries=0)
        assert len(ask(lm, 16, concurrency=8)) == 16
        dead = engine.endpoints[1]
        assert dead.failed >= 1 and dead.down_for == 30 and not engine.status()[1]["up"]


def test_server_errors_are_left_to_dspy_retries():
    """A 5xx is not failed over (the server is up; DSPy backs off), but counts against the endpoint."""
    with FakeOpenAI(faults=[500] * 10) as a, FakeOpenAI(faults=[500] * 10) as b:
        engine = RoutedEngine("fake", [a.api_base, b.api_base], api_key="x")
        lm = dspy.LM("openai/fake", engine=engine, cache=False, num_retries=0)
        with pytest.raises(Exception, match="500"):
            lm("hello")
        assert len(a.requests) + len(b.requests) == 1


def test_routed_completions_prefill_renders_one_template():
    from lbt_dspy.models.embedded import checkpoint_path

    ckpt = str(checkpoint_path())
    with FakeOpenAI() as a, FakeOpenAI() as b, ModelPool(cache=False) as pool:
        e = entry([a.api_base, b.api_base])
        e["model_cfg"].update(prefill="completions", tokenizer=ckpt)
        lm = pool.lm(e)
        msgs = [{"role": "user", "content": "[[Question]]: Tom has 3 apples. Tom buys 2 more apples."},
                {"role": "assistant", "content": "[[Solution]]:\n"}]
        with ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda i: lm(messages=msgs, rollout_id=i + 1, temperature=0.5), range(8)))
        bodies = [r["body"] for r in a.requests + b.requests]
        assert len(bodies) == 8 and all(r["path"].endswith("/completions") for r in a.requests + b.requests)
        assert all(x["prompt"].endswith("<|im_start|>assistant\n[[Solution]]:\n") for x in bodies)


def test_embedded_replicas_start_that_many_servers(monkeypatch):
    """`replicas: 2` starts two servers (scripted stand-ins here) and routes over both; the pool stops them."""
    import lbt_dspy.models.vllm_server as vllm_server

    started = []

    class StandIn:
        def __init__(self, checkpoint, serve_args=None, log_path=None, enforce_eager=True):
            self.srv = FakeOpenAI()
            self.model = checkpoint

        def start(self):
            self.srv.__enter__()
            started.append(self)
            return self

        def stop(self):
            self.srv.__exit__(None, None, None)
            started.remove(self)

        @property
        def api_base(self):
            return self.srv.api_base

    monkeypatch.setattr(vllm_server, "VLLMServer", StandIn)
    with ModelPool(cache=False) as pool:
        lm = pool.lm({"model_type": "embedded", "model_cfg": {"replicas": 2}}, {"temperature": 0.7})
        assert isinstance(lm.engine, RoutedEngine) and len(started) == 2
        ask(lm, 12, concurrency=4)
        assert all(s.srv.requests for s in started)
        again = pool.lm({"model_type": "embedded", "model_cfg": {"replicas": 2}}, {"temperature": 0.7})
        assert again.engine.api_base == lm.engine.api_base and len(started) == 2  # shared, not restarted
    assert not started


def test_embedded_replicas_must_be_a_positive_integer():
    with ModelPool() as pool:
        for bad in (0, -1, "2", True):
            with pytest.raises(LbtError, match="replicas"):
                pool.lm({"model_type": "embedded", "model_cfg": {"replicas": bad}})


@pytest.mark.integration
def test_two_embedded_servers_one_killed_mid_run(tmp_path):
    """Two real vLLM replicas of the embedded model; one is SIGKILLed during the exams: no request is lost."""
    import yaml

    from lbt_dspy.models import VLLMServer, checkpoint_path

    ckpt = str(checkpoint_path())
    cfg = yaml.safe_load(open("configs/demo.yaml"))
    with VLLMServer(ckpt, kv_cache_gib=1) as s1, VLLMServer(ckpt, kv_cache_gib=1) as s2:
        model = {"model_type": "vllm", "model_cfg": {
            "model": ckpt, "api_base": [s1.api_base, s2.api_base], "timeout": 120}}
        cfg.update(teacher_model_cfg=model, student_model_cfgs=[model], num_pairs=2, concurrency=4,
                   dataset_cfg={"num_families": 2, "num_variants": 3, "seed": 0}, num_retries=2, cache=False,
                   exam_maker_cfg={"num_exam_questions": 3, "num_repetitions": 1})
        for key in ("teacher_sample_cfg", "general_student_sample_cfg"):
            cfg[key] = {**cfg[key], "max_new_tokens": 24}
        exam_file = tmp_path / "run" / "exam.jsonl"
        killed = threading.Event()

        def killer():
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                if exam_file.exists() and len(exam_file.read_text().splitlines()) >= 2:
                    os.killpg(s2.proc.pid, signal.SIGKILL)
                    killed.set()
                    return
                time.sleep(0.05)
        t = threading.Thread(target=killer, daemon=True)
        t.start()
        calls = run_m1(M1Config.from_dict(cfg), tmp_path / "run", progress=False)
        t.join(timeout=5)
        assert killed.is_set() and s2.proc.poll() is not None
    assert calls["failed"] == 0, calls["error"]
    exam = [json.loads(x) for x in exam_file.read_text().splitlines()]
    assert len(exam) == len({r["key"] for r in exam}) == 2 * 2 * 3  # families x pairs x exam problems
    assert all(isinstance(r["completion"], str) for r in exam)  # whatever the model said, recorded


# --- circuit breakers behind the router: a dead replica is routed around; all dead stops the run ------------
def test_a_dead_replicas_breaker_opens_and_requests_go_to_the_live_one():
    from lbt_dspy.errors import BackendDown

    with FakeOpenAI() as a, FakeOpenAI() as b:
        kill(b)
        engine = RoutedEngine("fake", [a.api_base, b.api_base], cooldown=0.0, api_key="x")
        lm = dspy.LM("openai/fake", engine=engine, cache=False, num_retries=5)
        out = ask(lm, 40, concurrency=4)
        assert len(out) == 40 and all("[[Final Answer]]" in x for x in out)
        assert engine.endpoints[1].engine.breaker.is_open and not engine.endpoints[0].engine.breaker.is_open
        assert len(a.requests) == 40
        with pytest.raises(BackendDown):  # its engine refuses at once; the router sends the request to a
            engine.endpoints[1].engine.breaker.before_call()


def test_all_replicas_dead_fail_fast_with_one_error_naming_them_all():
    from lbt_dspy.errors import backend_down

    with FakeOpenAI() as a, FakeOpenAI() as b:
        kill(a), kill(b)
        engine = RoutedEngine("fake", [a.api_base, b.api_base], api_key="x")
        lm = dspy.LM("openai/fake", engine=engine, cache=False, num_retries=5)
        t0 = time.monotonic()
        with pytest.raises(Exception) as err:
            ask(lm, 8, concurrency=8)
        down = backend_down(err.value)
        assert down is not None and down.endpoint == f"{a.api_base}, {b.api_base}", err.value
        assert time.monotonic() - t0 < 10  # no call went through its 5 retries (1+2+4+8+16 s of backoff)


def test_an_m1_run_whose_replicas_all_die_stops_with_one_line(tmp_path, capsys):
    import yaml

    from lbt_dspy.cli import main

    with FakeOpenAI(delay=0.02) as a, FakeOpenAI(delay=0.02) as b:
        cfg = fake_config(a.api_base, concurrency=4, num_retries=5)
        cfg["teacher_model_cfg"] = entry([a.api_base, b.api_base])
        cfg["student_model_cfgs"][0]["model_cfg"]["api_base"] = [a.api_base, b.api_base]
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(cfg))

        def killer():
            while len(a.requests) + len(b.requests) < 8:
                time.sleep(0.005)
            kill(a), kill(b)
        t = threading.Thread(target=killer)
        t.start()
        t0 = time.monotonic()
        code = main(["m1", str(path), "--output-path", str(tmp_path / "run"), "-q"])
        elapsed = time.monotonic() - t0
        t.join()
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert f"lbt: error: {a.api_base}, {b.api_base}: backend down" in err
    assert elapsed < 60


# --- affinity: a key's requests meet one replica's prefix cache ------------------------------------------------
def keyed(lm, n, key, concurrency=1):
    from lbt_dspy.models.router import affinity

    def one(i):
        with affinity(key):
            return lm(f"[[Question]]: Tom has {i} apples. Tom buys 2 more apples. How many? ({key})")[0]
    with ThreadPoolExecutor(concurrency) as ex:
        return list(ex.map(one, range(n)))


def served(*servers):
    return [len(s.requests) for s in servers]


def test_requests_with_one_key_go_to_one_replica_and_keys_spread():
    with FakeOpenAI() as a, FakeOpenAI() as b, FakeOpenAI() as c:
        engine = RoutedEngine("fake", [a.api_base, b.api_base, c.api_base], api_key="x")
        lm = dspy.LM("openai/fake", engine=engine, cache=False, num_retries=0)
        assert engine.routing == "affinity"
        for k in range(30):
            before = served(a, b, c)
            keyed(lm, 4, f"pair-{k}")
            got = [x - y for x, y in zip(served(a, b, c), before)]
            assert sorted(got) == [0, 0, 4], (k, got)  # the key's four requests on one replica
        assert min(served(a, b, c)) >= 4 * 6  # 30 keys over 3 replicas: none left out (the least loaded first)


def test_both_students_of_a_pair_meet_its_demo_on_one_replica():
    """Two engines (a run's two students) over the same replicas share loads and homes."""
    with FakeOpenAI() as a, FakeOpenAI() as b:
        one = dspy.LM("openai/fake", engine=RoutedEngine("fake", [a.api_base, b.api_base], api_key="x"),
                      cache=False, num_retries=0)
        two = dspy.LM("openai/fake", engine=RoutedEngine("fake", [a.api_base, b.api_base], api_key="y"),
                      cache=False, num_retries=0)
        for k in range(8):
            before = served(a, b)
            keyed(one, 3, f"demo-{k}")
            keyed(two, 3, f"demo-{k}")
            assert sorted(x - y for x, y in zip(served(a, b), before)) == [0, 6], k


def test_a_full_home_sends_a_keys_requests_to_the_least_loaded():
    with FakeOpenAI(delay=1.0) as a, FakeOpenAI(delay=1.0) as b:  # all 8 in flight together, even on a busy machine
        engine = RoutedEngine("fake", [a.api_base, b.api_base], api_key="x", load_factor=1.25)
        lm = dspy.LM("openai/fake", engine=engine, cache=False, num_retries=0)
        keyed(lm, 8, "busy-pair", concurrency=8)  # all at once: the home passes 1.25 x the mean, then the other
        assert sorted(served(a, b)) != [0, 8] and sum(served(a, b)) == 8
        assert all(ep["in_flight"] == 0 for ep in engine.status())


def test_a_down_home_sends_a_keys_requests_elsewhere_and_none_is_lost():
    with FakeOpenAI() as a, FakeOpenAI() as b:
        engine = RoutedEngine("fake", [a.api_base, b.api_base], api_key="x", cooldown=30)
        lm = dspy.LM("openai/fake", engine=engine, cache=False, num_retries=0)
        keyed(lm, 2, "pair-x")
        home, other = (a, b) if a.requests else (b, a)
        kill(home)
        out = keyed(lm, 6, "pair-x")
        assert len(out) == 6 and all("[[Final Answer]]" in x for x in out)
        assert len(other.requests) == 6  # the first failed over at once, the rest sent there


def test_least_loaded_routing_ignores_keys():
    with FakeOpenAI() as a, FakeOpenAI() as b:
        engine = RoutedEngine("fake", [a.api_base, b.api_base], api_key="x", routing="least_loaded")
        keyed(dspy.LM("openai/fake", engine=engine, cache=False, num_retries=0), 8, "pair-y")
        assert served(a, b) == [4, 4]  # one at a time: ties rotate


def test_the_affinity_key_of_a_request():
    from dspy.lm15 import Message, Request

    from lbt_dspy.models.router import affinity, request_key

    few_shot = [Message.user("2+2?"), Message.assistant("4"), Message.user("3+3?")]
    assert request_key(Request(model="m", messages=few_shot[2:])) is None  # zero-shot: no key, least loaded
    k1 = request_key(Request(model="m", messages=few_shot))
    k2 = request_key(Request(model="m", messages=few_shot[:2] + [Message.user("5+5?")]))
    assert k1 and k1 == k2  # the demos, not the question asked
    with affinity("mine"):
        assert request_key(Request(model="m", messages=few_shot)) == "mine"
    with pytest.raises(ValueError, match="routing"):
        RoutedEngine("fake", ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"], routing="nearest")


def test_model_cfg_routing_picks_the_policy(fake_server):
    with ModelPool(cache=False) as pool, FakeOpenAI() as other:
        bases = [fake_server.api_base, other.api_base]
        assert pool.lm(entry(bases)).engine.routing == "affinity"
        e = entry(bases)
        e["model_cfg"]["routing"] = "least_loaded"
        assert pool.lm(e).engine.routing == "least_loaded"
        e["model_cfg"]["routing"] = "nearest"
        with pytest.raises(LbtError, match="routing"):
            pool.lm(e)


@pytest.mark.parametrize("routing", ["affinity", "least_loaded"])
def test_an_m1_run_sends_each_pairs_exam_to_one_replica(tmp_path, routing):
    """Both students' exam calls of a TR-TA pair (its demo in every prompt) reach one replica; least-loaded
    routing (one call at a time: ties rotate) splits them."""
    with FakeOpenAI() as a, FakeOpenAI() as b:
        model = {**entry([a.api_base, b.api_base])["model_cfg"], "routing": routing}
        cfg = fake_config(a.api_base, concurrency=1, num_pairs=2)
        cfg["teacher_model_cfg"] = {"model_type": "openai", "model_cfg": model}
        cfg["student_model_cfgs"] = [{"model_type": "openai", "model_cfg": {**model, "name": n}} for n in ("s1", "s2")]
        calls = run_m1(M1Config.from_dict(cfg), tmp_path / "run", progress=False)
        assert calls["failed"] == 0 and calls["exam"] == 3 * 2 * 2 * 2
        where: dict[str, set] = {}  # the demo (the prompt up to the question asked) -> the replicas it reached
        for name, srv in (("a", a), ("b", b)):
            for r in srv.requests:
                text = "\n".join(m.get("content") or "" for m in r["body"].get("messages", []))
                if text.count("[[Question]]") > 1:  # an exam prompt: a demo, then the question
                    where.setdefault(text.rsplit("[[Question]]", 1)[0], set()).add(name)
        assert where
        split = [demo for demo, names in where.items() if len(names) > 1]
        assert (not split) if routing == "affinity" else split
