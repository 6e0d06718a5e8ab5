"""The device script (benchmarks/gpu.py) in its dry mode: every stage it runs on a GPU, on the
CPU with tiny sizes — model-only rows per variant and batch, the profile, the demo served end to
end on `--backend torch` and load-tested with a real clip, and an AOTInductor package exported,
measured and served. (Its figures are noise here; no GPU figure comes from this test.)"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from benchmarks import gpu  # noqa: E402
from ptruntime.device import choose, here  # noqa: E402


def test_the_device_plan_is_what_the_issue_asks_for():
    plan = gpu.make_plan(dry=False)
    assert plan.preset == "videomae-b" and plan.batches == (1, 8, 32) and plan.concurrency == (1, 16, 64)
    assert set(plan.modes) == {"eager", "graphs", "compile"} and {"none", "tome", "sttm"} <= set(plan.variants)
    assert plan.served == ("none", "sttm") and plan.aoti == ("sttm", "none") and plan.stages == gpu.STAGES


def test_the_dry_run_measures_every_stage(tmp_path):
    assert gpu.main(["--dry", "--out", str(tmp_path), "--budget-s", "300"]) == 0
    result = json.loads((tmp_path / "gpu.json").read_text())
    model = [r for r in result["rows"] if r["stage"] == "model"]
    assert {(r["variant"], r["batch"]) for r in model} == {(v, b) for v in gpu.VARIANTS for b in (1, 2)}
    assert all(r["clips_per_s"] > 0 for r in model)
    served = {r["variant"]: r for r in result["rows"] if r["stage"] == "serve"}
    assert set(served) == {"sttm", "none aoti"}
    assert (served["sttm"]["backend"], served["none aoti"]["backend"]) == ("torch:cpu", "torch:cpu (AOTInductor)")
    auto = choose(here(), "auto").precision  # a checkpoint on this CPU: bf16 where it has bf16 units
    fell_back = "auto: fp32, torch bf16 does not match" in served["sttm"]["reason"]  # the check refused bf16
    assert served["sttm"]["precision"] == ("fp32" if fell_back else auto)
    assert served["none aoti"]["precision"] == "fp32"  # the package the dry run compiles
    for row in served.values():
        assert [lv["concurrency"] for lv in row["levels"]] == [1, 2]
        assert all(lv["errors"] == 0 and lv["latency_ms"]["p99"] >= lv["latency_ms"]["p50"] > 0 for lv in row["levels"])
    (exported,) = [r for r in result["rows"] if r["stage"] == "aoti"]
    assert exported["variant"] == "none" and exported["export_s"] > 0
    assert {(r["mode"], r["batch"]) for r in model if r["variant"] == "none"} >= {("aoti", 1), ("aoti", 2)}
    profiles = {r["variant"]: r for r in result["rows"] if r["stage"] == "profile"}
    assert set(profiles) == {"none", "sttm"} and "merge" in profiles["sttm"]["ranges"]
    for profile in profiles.values():
        assert profile["time"] == "self CPU time" and len(profile["top"]) >= 5 and profile["ms_per_forward"] > 0
    table = (tmp_path / "gpu.md").read_text()
    assert "| eager | sttm | 2 |" in table and f"| sttm | torch:cpu {served['sttm']['precision']} | 2 |" in table
    assert "| none aoti | torch:cpu (AOTInductor) fp32 | 2 |" in table and "| `merge (range)` |" in table


def test_a_rerun_names_its_stages():
    with pytest.raises(SystemExit):
        gpu.main(["--dry", "--stages", "model,warp"])


def test_the_wheels_carried_are_the_serve_extra():
    """The device machine has torch but no serving wheels: the list is read from pyproject.toml's
    `serve` extra, so a dependency added there is carried too."""
    wheels = gpu.serving_wheels()
    assert {"fastapi", "uvicorn", "pydantic", "python-multipart", "av", "safetensors"} <= set(wheels)
    assert all(">" not in name and "=" not in name for name in wheels)
