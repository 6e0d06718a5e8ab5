"""A ladder of merge ratios: the load policy's pure functions (property tests), loading a
ladder directory, pinned and auto rungs through the real app, and a burst."""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.main import main
from runtime.backends import BackendOptions, ModelLoadError
from runtime.ladder_file import LADDER_FILE, RungEntry, parse_reductions, write_ladder
from service.app import create_app
from service.batcher import Demand, Waiting
from service.ladder_policy import (
    DESCEND_BELOW,
    SETTLE_BATCHES,
    LoadPolicy,
    RungCost,
    choose_rung,
    ewma,
    keeps_up,
    latest_finish,
    learn_cost,
    load_rungs,
    newcomer_finish,
    predicted_seconds,
    rung_cost,
)
from service.settings import Settings
from tests.service.conftest import TINY_META, write_tiny_onnx

costs_st = st.lists(st.floats(1e-4, 1.0), min_size=1, max_size=5)
finish_st = st.lists(st.floats(0.0, 20.0), min_size=1, max_size=5)
backlog_st = st.lists(st.tuples(st.floats(0.0, 5.0), st.integers(1, 8)), max_size=20)  # (seconds spent, clips)
target_st = st.floats(1e-3, 10.0)


def _queued(*clips: int, age_s: float = 0.0, clips_per_s: float = 0.0) -> Demand:
    return Demand([Waiting(age_s, n, True) for n in clips], clips_per_s)


@settings(max_examples=300, deadline=None)
@given(finish_st, target_st, st.data())
def test_choose_rung_meets_the_target_when_any_rung_can_and_is_a_fixed_point(finish, target, data):
    current = data.draw(st.integers(0, len(finish) - 1))
    rung = choose_rung(finish, target, current)
    assert 0 <= rung < len(finish)
    fitting = [i for i, f in enumerate(finish) if f <= target]
    if fitting:
        assert rung in fitting and rung >= fitting[0]  # meets it, never less merged than the least that fits
    else:
        assert rung == len(finish) - 1  # nothing fits: the most merged rung, never a refusal
    if rung < current:  # it came down: only to a rung well inside the target, or the current one missed it
        assert finish[rung] <= DESCEND_BELOW * target or current not in fitting
    assert choose_rung(finish, target, rung) == rung  # asked again, it stays: no flapping


@settings(max_examples=300, deadline=None)
@given(backlog_st, backlog_st, costs_st)
def test_latest_finish_counts_each_request_from_its_arrival(backlog, more, costs):
    cost = costs[0]
    latest = latest_finish(backlog, cost)
    done = 0
    for spent, clips in backlog:  # every request finishes by then
        done += clips
        assert spent + done * cost <= latest + 1e-9
    assert latest_finish(backlog + more, cost) >= latest  # more work behind never finishes sooner
    assert all(latest_finish(backlog, cost) <= latest_finish(backlog, c) + 1e-9 for c in costs if c >= cost)
    total = sum(clips for _, clips in backlog)
    assert latest_finish([(0.0, total)], cost) == pytest.approx(predicted_seconds(total, cost))  # a fresh queue


@settings(max_examples=300, deadline=None)
@given(costs_st, backlog_st, backlog_st, target_st, st.data())
def test_choose_rung_climbs_as_work_and_waiting_grow(costs, backlog, more, target, data):
    costs = sorted(costs, reverse=True)  # more merged, cheaper
    current = data.draw(st.integers(0, len(costs) - 1))
    older = [(spent + data.draw(st.floats(0, 1)), clips) for spent, clips in backlog]  # the same queue, later

    def rung(work):
        return choose_rung([latest_finish(work, c) for c in costs], target, current)

    assert rung(backlog) <= rung(backlog + more) and rung(backlog) <= rung(older)
    assert rung([]) == 0  # an empty server: back to the least merged


def test_hysteresis_holds_a_rung_inside_the_band():
    costs, target = [0.1, 0.05], 1.0  # rung 0 serves 10 clips in the target, rung 1 serves 20

    def finish(queued):
        return [predicted_seconds(queued, c) for c in costs]

    assert choose_rung(finish(12), target, current=0) == 1  # 1.2 s on rung 0: climb
    for queued in (9, 10, 9, 10):  # 0.9-1.0 s on rung 0: within the target, not within 80% of it
        assert choose_rung(finish(queued), target, current=1) == 1
        assert choose_rung(finish(queued), target, current=0) == 0
    assert choose_rung(finish(8), target, current=1) == 0  # 0.8 s: well inside, come down


@given(st.floats(0, 10), st.floats(0, 10), st.floats(0.01, 1))
def test_ewma_stays_between_history_and_sample(previous, sample, alpha):
    value = ewma(previous, sample, alpha)
    assert min(previous, sample) - 1e-12 <= value <= max(previous, sample) + 1e-12


def test_load_policy_learns_costs_online_and_without_a_target_stays_least_merged():
    policy = LoadPolicy([0.01, 0.005], target_s=0.1, in_flight=2)  # a batch of 2 may be running
    assert policy.choose(_queued(4)) == 0 and policy.choose(_queued(4, 5)) == 1 and policy.current == 1
    policy.observe(1, clips=4, seconds=0.2)  # rung 1 is slower than its warm-up said: 50 ms per clip
    assert policy.costs[1] == pytest.approx(0.05) and policy.predict(4, 1) == pytest.approx(0.2)
    assert policy.costs[0] == 0.01  # its own batches taught it; rung 0 has no reason to move
    assert LoadPolicy([0.01, 0.005], target_s=None).choose(_queued(1000)) == 0


def _serve(costs, level, rung, per_clip, batches=1):
    for _ in range(batches):
        costs, level = learn_cost(costs, level, rung, per_clip)
    return costs, level


def test_a_rung_learns_its_own_cost_and_does_not_drag_the_others():
    warm_up, true = [0.10, 0.05, 0.04], [0.10, 0.08, 0.03]  # on this CPU rung 1 costs 1.6x its warm-up ratio
    costs, level = [RungCost(c) for c in warm_up], 1.0
    costs, level = _serve(costs, level, 1, true[1], batches=20)  # only rung 1 is used
    assert rung_cost(costs[1], level) == pytest.approx(true[1])
    assert [rung_cost(costs[i], level) for i in (0, 2)] == pytest.approx([0.10, 0.04])  # not dragged by 1.6x
    # rungs used in turn (as under load): each converges to its own cost; with one shared
    # factor over the warm-up ratios they could not (each batch dragged the others)
    for _ in range(30):
        for rung in (0, 1, 2, 1):
            costs, level = learn_cost(costs, level, rung, true[rung])
    assert [rung_cost(c, level) for c in costs] == pytest.approx(true)


def test_a_slower_machine_reaches_the_rungs_not_in_use():
    true = [0.10, 0.08, 0.03]
    costs, level = [RungCost(c) for c in (0.10, 0.05, 0.04)], 1.0
    for rung in (0, 1, 2):  # every rung has settled on its own cost
        costs, level = _serve(costs, level, rung, true[rung], batches=SETTLE_BATCHES)
    assert level == 1.0 and [rung_cost(c, level) for c in costs] == pytest.approx(true)
    costs, level = _serve(costs, level, 2, 1.5 * true[2], batches=30)  # the machine got 1.5x busier
    assert [rung_cost(c, level) for c in costs] == pytest.approx([1.5 * t for t in true], rel=1e-3)  # idle rungs too
    costs, level = _serve(costs, level, 0, 1.5 * true[0], batches=5)  # rung 0 finds it as predicted
    assert [rung_cost(c, level) for c in costs] == pytest.approx([1.5 * t for t in true], rel=1e-3)


@settings(max_examples=200, deadline=None)
@given(costs_st, st.data())
def test_learn_cost_converges_on_each_rungs_own_cost_in_any_order(warm_up, data):
    true = data.draw(st.lists(st.floats(1e-3, 1.0), min_size=len(warm_up), max_size=len(warm_up)))
    order = data.draw(st.lists(st.integers(0, len(warm_up) - 1), max_size=40))
    costs, level = [RungCost(c) for c in warm_up], 1.0
    for rung in [*order, *range(len(warm_up))]:  # any order, then each rung at least once
        costs, level = learn_cost(costs, level, rung, true[rung])
        assert level > 0 and all(rung_cost(c, level) > 0 for c in costs)
    # noise-free batches: a rung's first one replaces its warm-up, and a settled rung that
    # meets its estimate moves nothing: every rung knows its own cost, whatever the order
    assert [rung_cost(c, level) for c in costs] == pytest.approx(true)


def test_load_policy_climbs_for_a_request_that_has_waited():
    policy = LoadPolicy([0.01, 0.005], target_s=0.1)
    assert policy.choose(_queued(1, 1)) == 0  # two fresh clips: 20 ms on rung 0
    # the same two clips, but the first arrived 95 ms ago: 105 ms on rung 0, 100 ms on rung 1
    assert policy.choose(Demand([Waiting(0.095, 1, True), Waiting(0.0, 1, True)], 0.0)) == 1


def test_load_policy_skips_a_rung_that_cannot_keep_up_with_arrivals():
    policy = LoadPolicy([0.01, 0.005], target_s=0.1)
    assert policy.choose(_queued(1, clips_per_s=50)) == 0  # rung 0 is 50% busy: fine
    # one clip queued fits rung 0, but 95 clips/s keep rung 0 95% busy: the next burst would
    # queue past the target, so rung 1 (48% busy) now
    assert policy.choose(_queued(1, clips_per_s=95)) == 1
    assert policy.choose(_queued(1, clips_per_s=1000)) == 1  # no rung keeps up: the most merged one
    assert not keeps_up(95, 0.01) and keeps_up(90, 0.01) and keeps_up(0, 10.0)


def test_load_policy_takes_the_time_outside_the_model_off_the_target():
    policy = LoadPolicy([0.01, 0.005], target_s=0.1)
    assert policy.choose(_queued(8)) == 0  # 80 ms of model time fits 100 ms
    policy.observe_outside(0.05)  # but each request also decodes for 50 ms
    assert policy.choose(_queued(8)) == 1  # 8 clips on rung 1: 40 ms + 50 ms
    policy.observe_outside(0.01)
    assert 0.01 < policy.outside_s < 0.05  # an EWMA, after the first sample
    policy.observe_outside(0.5)
    assert policy.choose(_queued(100)) == 1  # nothing fits: the most merged rung, never a refusal
    policy = LoadPolicy([0.01, 0.005], target_s=0.1)
    policy.observe_outside(0.06)
    # a request still decoding for 10 ms so far will have decoded for ~60 ms before its 5 clips run
    assert policy.choose(Demand([Waiting(0.01, 5, False)], 0.0)) == 1  # 60 + 50 ms on rung 0 misses 100 ms, rung 1 fits


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 100), st.floats(0.0, 1.0), st.integers(1, 8), costs_st)
def test_a_newcomer_finishes_after_every_clip_ahead_of_it(ahead, outside, clips, costs):
    finish = [newcomer_finish(ahead, outside, clips, c) for c in sorted(costs)]
    assert finish == sorted(finish)  # a cheaper rung never finishes it later
    assert finish[0] >= outside + clips * min(costs) - 1e-9
    more = newcomer_finish(ahead + 1, outside, clips, costs[0])
    assert more == pytest.approx(newcomer_finish(ahead, outside, clips, costs[0]) + costs[0])  # one clip more ahead


def test_a_deadline_refuses_what_even_the_most_merged_rung_answers_late():
    policy = LoadPolicy([0.02, 0.01], target_s=0.1, deadline=True)
    assert policy.refuse(_queued(4), clips=1, rung=None) is None  # 5 clips x 10 ms on the top rung: 50 ms
    refused = policy.refuse(_queued(8, 4), clips=1, rung=None)  # 13 clips: 130 ms even on the top rung
    assert refused is not None and refused.reason == "late" and refused.retry_after_s == 1
    assert "latency target (100 ms)" in str(refused) and "130 ms" in str(refused)
    assert policy.refuse(_queued(5), clips=1, rung=None) is None  # 6 x 10 ms on the top rung
    assert policy.refuse(_queued(5), clips=1, rung=0) is not None  # pinned to rung 0: 6 x 20 ms
    policy.observe_outside(0.06)  # decoding before the clip can run counts too
    assert policy.refuse(_queued(4), clips=1, rung=None) is not None  # 60 + 50 ms
    late = policy.refuse(_queued(400), clips=1, rung=None)
    assert late.retry_after_s == 4  # 60 ms + 4.01 s, 3.97 s late: try again in 4 s
    # without the flag, or without a target, nothing is refused (the target only picks rungs)
    assert LoadPolicy([0.02, 0.01], target_s=0.1).refuse(_queued(400), 1, None) is None
    assert LoadPolicy([0.02, 0.01], target_s=None, deadline=True).refuse(_queued(400), 1, None) is None


def test_parse_reductions():
    assert parse_reductions("0.5,0,0.25,0.38") == [0.0, 0.25, 0.38, 0.5]
    for bad in ("0.3,x", "1.2", "0.38,0.381", "", "0.2,0.2", "0,0.5,0"):
        with pytest.raises(ValueError):
            parse_reductions(bad)


def write_ladder_dir(root, rungs=((0.0, 96), (0.5, 12)), meta=TINY_META):
    """A ladder of tiny models, `(reduction, work)` per rung: less work for more merged rungs."""
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for reduction, work in rungs:
        rung_meta = dataclasses.replace(meta, reduction=reduction, gflops=work * 0.01, merge="sttm")
        name = f"tiny_r{round(reduction * 100):03d}"
        write_tiny_onnx(root / f"{name}.onnx", rung_meta, work=work, seed=int(reduction * 100))
        entries.append(RungEntry(reduction, name, f"{name}.onnx", rung_meta.gflops, "fp32", {"top1": 1 - reduction}))
    write_ladder(root, "tiny", entries)
    return root


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    return write_ladder_dir(tmp_path_factory.mktemp("ladder") / "tiny")


def _clip(clips, name="moving_right"):
    return (clips / "videos" / f"{name}_00000.mp4").read_bytes()


def _post(client, data, path="/v1/classify", **params):
    return client.post(path, files={"file": ("clip.mp4", data, "video/mp4")}, params=params)


def _metric(client, name: str) -> float:
    lines = client.get("/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name))


def test_a_pinned_request_runs_on_its_rung(ladder, clips):
    with TestClient(create_app(Settings(model=ladder))) as client:
        info = client.get("/v1/models").json()[0]
        assert info["name"] == "tiny" and [r["reduction"] for r in info["rungs"]] == [0.0, 0.5]
        assert [r["name"] for r in info["rungs"]] == ["tiny_r000", "tiny_r050"]
        assert info["rungs"][1]["gflops"] == pytest.approx(0.12) and info["rungs"][1]["measured"] == {"top1": 0.5}
        answers = {}
        for reduction in ("0", "0.5", "auto"):
            r = _post(client, _clip(clips), reduction=reduction)
            assert r.status_code == 200, r.text
            answers[reduction] = r.json()
        assert answers["0.5"]["reduction"] == 0.5 and answers["0.5"]["gflops"] == pytest.approx(0.12)
        assert answers["0"]["reduction"] == 0.0 and answers["auto"]["reduction"] == 0.0  # no target: least merged
        assert answers["0"]["predictions"] != answers["0.5"]["predictions"]  # two different models answered
        t = _post(client, _clip(clips), "/v1/timeline", reduction="0.5", window_s=1.0)
        assert t.status_code == 200 and t.json()["reduction"] == 0.5
        form = client.post("/v1/classify", files={"file": ("c.mp4", _clip(clips))}, data={"reduction": "0.5"})
        assert form.status_code == 200 and form.json()["reduction"] == 0.5
        bad = _post(client, _clip(clips), reduction="0.38")
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "bad_option"
        assert "0, 0.5" in bad.json()["error"]["message"]
        fast = _post(client, _clip(clips), reduction="fast")  # one message, not one per member of the union
        assert fast.status_code == 422
        assert fast.json()["error"]["message"] == "reduction: 'auto' or a rung's reduction, a number in [0, 1)"
        # KServe v2: the model (auto) and one model per rung
        tensor = {"name": "video", "shape": [1, 3, 8, 64, 64], "datatype": "FP32", "data": [0.1] * (3 * 8 * 64 * 64)}
        outs = {}
        for name in ("tiny", "tiny_r000", "tiny_r050"):
            assert client.get(f"/v2/models/{name}/ready").status_code == 200
            r = client.post(f"/v2/models/{name}/infer", json={"inputs": [tensor]})
            assert r.status_code == 200 and r.json()["model_name"] == name
            outs[name] = r.json()["outputs"][0]["data"]
        assert outs["tiny"] == pytest.approx(outs["tiny_r000"]) and outs["tiny_r050"] != pytest.approx(outs["tiny"])
        pinned_clips = 3 + len(t.json()["windows"])  # classify, the form, KServe, and the timeline's windows
        assert _metric(client, 'sttm_rung_clips_total{reduction="0.5"}') == pinned_clips
        assert _metric(client, 'sttm_batch_seconds_count{kind="predicted",reduction="0.5"}') >= 1


def test_a_single_model_is_a_ladder_of_one_rung(tiny_onnx, clips):
    with TestClient(create_app(Settings(model=tiny_onnx))) as client:
        info = client.get("/v1/models").json()[0]
        assert [(r["reduction"], r["name"]) for r in info["rungs"]] == [(0.0, "tiny_r000")]
        r = _post(client, _clip(clips))
        assert r.status_code == 200 and r.json()["reduction"] == 0.0 and r.json()["gflops"] == 0.0
        assert _post(client, _clip(clips), reduction="0.5").status_code == 422


def test_under_a_burst_auto_climbs_rejects_nothing_and_comes_back_down(ladder, clips):
    settings_ = Settings(model=ladder, max_batch=4, max_wait_ms=20, max_queue=256, latency_target_ms=1000)
    with TestClient(create_app(settings_)) as client:
        policy = client.app.state.runtime.classifier.policy
        assert policy.costs[0] > policy.costs[1] > 0  # measured at warm-up: the merged rung is cheaper
        # the target: a batch in flight + 16 clips on the least-merged rung (as measured), plus 0.1 s for
        # a request's own decoding (the policy takes it off the target): 128 clips cannot meet it
        assert policy.in_flight == 4
        policy.target_s = (policy.in_flight + 16) * policy.costs[0] + 0.1
        data = _clip(clips)
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: _post(client, data, num_clips=8), range(16)))
        assert [r.status_code for r in answers] == [200] * 16  # the target picks a rung, it never refuses
        used = [r.json()["reduction"] for r in answers]
        assert 0.5 in used, used
        assert _metric(client, 'sttm_rung_clips_total{reduction="0.5"}') > 0
        assert _metric(client, 'sttm_rejected_total{reason="queue_full"}') == 0
        # one clip at a time: well inside the target, back to the least merged once the costs and
        # the decoding time measured during the burst (8 views a request, on a busy machine) have settled
        after = []
        while len(after) < 40 and after[-1:] != [0.0]:
            after.append(_post(client, data).json()["reduction"])
        assert after[-1] == 0.0, (after, policy.costs, policy.target_s)


def test_with_a_deadline_a_burst_is_answered_in_time_or_refused_at_once(ladder, clips):
    settings_ = Settings(
        model=ladder, max_batch=4, max_wait_ms=20, max_queue=256, latency_target_ms=1000, latency_deadline=True
    )
    with TestClient(create_app(settings_)) as client:
        policy = client.app.state.runtime.classifier.policy
        data = _clip(clips)
        assert _post(client, data, num_clips=8).status_code == 200  # the policy measures a request's decoding
        # ~12 clips on the most merged rung, after a request's decoding as measured on this machine
        # (a fixed allowance would admit the whole burst where the runtime is fast)
        policy.target_s = policy.outside_s + 12 * policy.costs[-1]
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: _post(client, data, num_clips=8), range(16)))
        codes = [r.status_code for r in answers]
        assert set(codes) == {200, 503}, codes  # 128 clips: some fit the target, the rest cannot
        for r in answers:
            if r.status_code == 503:
                assert r.json()["error"]["code"] == "overloaded" and "latency target" in r.json()["error"]["message"]
                assert int(r.headers["Retry-After"]) >= 1
        refused = codes.count(503)
        assert _metric(client, 'sttm_rejected_total{reason="late"}') == refused
        assert _metric(client, 'sttm_rejected_total{reason="queue_full"}') == 0
        assert client.app.state.runtime.classifier.batcher.load == 0  # a refusal holds no room
    with pytest.raises(ValueError, match="latency target"):
        Settings(model=ladder, latency_deadline=True)


def test_a_broken_ladder_fails_to_load_in_one_line(tmp_path, clips):
    def refused(path, *expected):
        with pytest.raises(ModelLoadError) as err:
            load_rungs(path, BackendOptions("onnxruntime"))
        message = str(err.value)
        assert "\n" not in message and all(e in message for e in expected), message
        return message

    missing = write_ladder_dir(tmp_path / "missing")
    (missing / "tiny_r050.onnx").unlink()
    refused(missing, "rung 0.5", "tiny_r050.onnx", "missing")
    corrupt = write_ladder_dir(tmp_path / "corrupt")
    (corrupt / "tiny_r050.onnx").write_bytes(b"\x08\x07garbage" * 10)
    refused(corrupt, "rung 0.5")
    labels = write_ladder_dir(tmp_path / "labels")
    write_tiny_onnx(labels / "tiny_r050.onnx", dataclasses.replace(TINY_META, labels=("a", "b")))
    refused(labels, "rung 0.5", "refused", "labels")
    spec = write_ladder_dir(tmp_path / "spec")
    sixteen = dataclasses.replace(TINY_META.input_spec, frames=16)
    write_tiny_onnx(spec / "tiny_r050.onnx", dataclasses.replace(TINY_META, input_spec=sixteen))
    refused(spec, "rung 0.5", "refused", "input spec")
    refused(tmp_path, "without ladder.json")
    (tmp_path / "spec" / LADDER_FILE).write_text(json.dumps({"format": "sttm-ladder", "rungs": "x"}))
    refused(tmp_path / "spec", "not a valid ladder")
    (tmp_path / "spec" / LADDER_FILE).write_text(json.dumps({"format": "sttm-ladder"}))
    refused(tmp_path / "spec", "not a valid ladder (no 'rungs' field)")  # was: ('rungs')
    # the server: not ready with the reason; the CLI: one line, exit 2
    with TestClient(create_app(Settings(model=labels, require_model=False))) as client:
        r = client.post("/v1/classify", files={"file": ("c.mp4", _clip(clips))})
        assert r.status_code == 503 and "refused" in r.json()["error"]["message"]
        assert client.get("/v2/health/ready").status_code == 503


def test_cli_refuses_a_ladder_with_a_missing_rung(tmp_path, clips, capsys, monkeypatch):
    monkeypatch.setenv("STTM_MODEL", "demo")  # `sttm serve` sets it for its workers: restored (unset) after
    missing = write_ladder_dir(tmp_path / "missing")
    (missing / "tiny_r000.onnx").unlink()
    assert main(["serve", "--model", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sttm serve: error: ladder") and "tiny_r000.onnx is missing" in err and err.count("\n") == 1
    video = str(clips / "videos" / "moving_right_00000.mp4")
    assert main(["predict", str(missing), video]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sttm predict: error: ladder") and err.count("\n") == 1
