"""Teaching the router from traffic labels: loading and weighting labels, training on dev data + labels,
`classifier promote` (install when not worse, refuse when worse) and `classifier rollback`.

The traffic labels are scripted from the arena-hard chat prompts (no real judge here): "coding prompts fail
locally, everything else is answered well by both" -- enough to check the mechanics and the direction.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from classifier import DEFAULT_MODEL_PATH, load_model
from classifier import metrics as M
from classifier.data import RoutingDataset, hold_out_recent, load_dataset, traffic_weight, weight_traffic
from classifier.fit import RouterConfig, fit_router
from classifier.install import InstallError, install, rollback, rollback_path
from classifier.model import metrics_path_for
from classifier.train import train
from tests.test_classifier import _synthetic_rows

REPO_ROOT = Path(__file__).resolve().parent.parent
# shared/ sits beside the checkout (CI), or beside the folder of worktrees
SHARED = next((p for p in (REPO_ROOT.parent / "shared", REPO_ROOT.parent.parent / "shared") if p.is_dir()),
              REPO_ROOT.parent / "shared")
DEV_DATA = SHARED / "data/routing/dev.jsonl"
ARENA = SHARED / "data/chat/arena-hard-prompts.jsonl"
needs_data = pytest.mark.skipif(not (DEV_DATA.is_file() and ARENA.is_file()), reason="shared data not available")
T0 = 1_760_000_000.0


def traffic_labels(n: int = 400, seed: int = 0, local_fails_on: str = "coding") -> list[dict]:
    """``n`` label rows from arena-hard v2 prompts (coding / creative writing / math in turn), timestamps in a
    seeded random order one minute apart; the local model fails exactly on ``local_fails_on`` prompts."""
    rows = [json.loads(line) for line in ARENA.read_text(encoding="utf-8").splitlines() if line.strip()]
    by_cat = [[r for r in rows if r.get("source") == "arena-hard-v2.0" and r["category"] == c]
              for c in ("coding", "creative_writing", "math")]
    picked = [r for trio in zip(*by_cat) for r in trio][:n]
    order = np.random.default_rng(seed).permutation(len(picked))
    return [
        {"prompt": r["prompt"], "weak_correct": r["category"] != local_fails_on, "strong_correct": True,
         "ts": T0 + 60.0 * float(order[i]), "request_id": f"req-{i:04d}", "tenant": "t-3f2a9c",
         "local_model": "qwen2.5-coder-0.5b", "upstream_model": "gpt-4o", "judge_model": "gpt-4o",
         "score": None, "source": "judge", "category": r["category"]}
        for i, r in enumerate(picked)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    full_env.pop("SLM_GATEWAY_CLASSIFIER_MODEL", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "classifier.cli", "classifier", *args], capture_output=True,
                          text=True, cwd=REPO_ROOT, env=full_env, timeout=timeout)


# --------------------------------------------------------------------------- label rows


def test_label_rows_need_no_benchmark_and_may_be_one_sided(tmp_path: Path) -> None:
    rows = [
        {"prompt": "a", "weak_correct": True, "strong_correct": False, "ts": 5.0, "source": "judge"},
        {"prompt": "b", "weak_correct": False, "ts": 6.0, "source": "feedback"},  # local answer was bad
        {"prompt": "c", "strong_correct": True, "weak_correct": None, "ts": 7.0, "source": "feedback"},
        {"prompt": "d", "weak_correct": True, "strong_correct": True, "benchmark": "mmlu", "subject": "law"},
    ]
    ds = load_dataset(write_jsonl(tmp_path / "l.jsonl", rows))
    assert ds.benchmark.tolist() == ["traffic", "traffic", "traffic", "mmlu"]
    assert ds.weak_known.tolist() == [True, True, False, True]
    assert ds.strong_known.tolist() == [True, False, True, True]
    assert ds.both_known.tolist() == [True, False, False, True]
    assert ds.weak_correct.tolist() == [True, False, False, True]
    assert ds.strong_correct.tolist() == [False, False, True, True]
    assert ds.ts[:3].tolist() == [5.0, 6.0, 7.0] and np.isnan(ds.ts[3])
    assert ds.weight.tolist() == [1.0, 1.0, 1.0, 1.0]
    write_jsonl(tmp_path / "bad.jsonl", [rows[0], {"prompt": "x", "ts": 1.0}])
    with pytest.raises(ValueError, match=r"bad.jsonl:2: bad row \('weak_correct / strong_correct \(at least one\)'\)"):
        load_dataset(tmp_path / "bad.jsonl")


def test_default_traffic_weighting() -> None:
    def ds(n_bench: int, n_traffic: int) -> RoutingDataset:
        n = n_bench + n_traffic
        return RoutingDataset(["p"] * n, np.array(["mmlu"] * n_bench + ["traffic"] * n_traffic, dtype=object),
                              np.zeros(n, bool), np.ones(n, bool))

    assert traffic_weight(ds(10_588, 320)) == 4.0  # 0.5 * 10588 / 320 = 16.54, capped at MAX_TRAFFIC_WEIGHT
    assert traffic_weight(ds(10_588, 320), cap=100.0) == pytest.approx(16.54375)
    assert traffic_weight(ds(3_000, 500)) == pytest.approx(3.0)  # 0.5 * 3000 / 500: under the cap
    assert traffic_weight(ds(10_588, 30_000)) == 1.0  # plentiful traffic is not down-weighted
    assert traffic_weight(ds(0, 50)) == 1.0 and traffic_weight(ds(50, 0)) == 1.0
    weighted, w = weight_traffic(ds(100, 10))
    assert w == 4.0 and weighted.weight.tolist() == [1.0] * 100 + [4.0] * 10  # 0.5 * 100 / 10 = 5, capped
    assert weight_traffic(ds(100, 10), 2.5)[0].weight[-1] == 2.5
    with pytest.raises(ValueError, match="traffic weight must be > 0"):
        weight_traffic(ds(100, 10), 0.0)


def test_hold_out_takes_the_most_recent_timestamped_rows() -> None:
    n = 12
    ts = np.array([np.nan, np.nan] + [T0 + 60 * k for k in (9, 3, 0, 7, 1, 8, 2, 6, 5, 4)])
    ds = RoutingDataset([f"p{i}" for i in range(n)], np.array(["x"] * n, dtype=object), np.zeros(n, bool),
                        np.ones(n, bool), ts=ts)
    keep, cutoff = hold_out_recent(ds, 0.2)  # 2 of the 10 timestamped rows
    assert cutoff == T0 + 60 * 8
    assert keep.tolist() == [0, 1, 3, 4, 5, 6, 8, 9, 10, 11]  # rows 2 (k=9) and 7 (k=8) held out
    assert hold_out_recent(ds, 0.0) == (pytest.approx(np.arange(n)), None)


def test_one_sided_rows_train_only_the_side_they_know() -> None:
    rows = _synthetic_rows()
    base = RoutingDataset([r["prompt"] for r in rows], np.array([r["benchmark"] for r in rows], dtype=object),
                          np.array([r["weak_correct"] for r in rows]), np.array([r["strong_correct"] for r in rows]))
    extra = [f"Question {i} about quantum field renormalization integral?\nA. one\nB. two\nC. three\nD. four\nAnswer:"
             for i in range(1000, 1060)]
    k = len(extra)
    # feedback on local answers only: the local model was wrong, the upstream side is unknown
    feedback = RoutingDataset(extra, np.array(["traffic"] * k, dtype=object), np.zeros(k, bool), np.zeros(k, bool),
                              weak_known=np.ones(k, bool), strong_known=np.zeros(k, bool))
    from classifier.data import concat

    config = RouterConfig(word_features=2**10, tree_weight=0.0, subject_prior_weight=0.0)
    plain = fit_router(base, config)
    taught = fit_router(concat([base, feedback]), config)
    for fam in ("mc", "all"):
        np.testing.assert_array_equal(taught.models[fam + "+"].coef_, plain.models[fam + "+"].coef_)
        assert not np.array_equal(taught.models[fam + "-"].coef_, plain.models[fam + "-"].coef_)
    assert taught.family_models("mc") == ("mc+", "mc-") and taught.families == plain.families
    # P(local right) fell on such prompts, so their score (the benefit of going upstream) rose
    assert taught.score(extra[0]) > plain.score(extra[0])


def test_train_and_eval_where_local_is_as_good_as_upstream_on_a_slice(tmp_path: Path) -> None:
    bench = write_jsonl(tmp_path / "bench.jsonl", _synthetic_rows())
    same = [{"prompt": f"Write a short poem about the sea, take {i}.", "weak_correct": i % 3 != 0,
             "strong_correct": i % 3 != 0, "ts": T0 + i} for i in range(60)]  # weak == strong on every row
    labels = write_jsonl(tmp_path / "same.jsonl", same)
    metrics = train([bench, labels], tmp_path / "m" / "router.skops", RouterConfig(word_features=2**12), hold_out=0.0)
    traffic = metrics["train_fit_in_sample"]["traffic"]
    assert traffic["pgr_defined"] is False and traffic["n"] == 60
    assert traffic["router"] == {"apgr": None, "cpt50": None, "cpt80": None}
    assert traffic["weak_acc"] == traffic["strong_acc"] == pytest.approx(40 / 60)
    assert metrics["train_fit_in_sample"]["mmlu"]["router"]["apgr"] is not None
    assert metrics["trained_on"]["traffic_row_weight"] == pytest.approx(2.0)  # 0.5 * 240 / 60
    proc = run_cli("eval", "--data", str(bench), "--data", str(labels), "--model", str(tmp_path / "m" / "router.skops"))
    assert proc.returncode == 0, proc.stderr
    assert "traffic    router              n/a              n/a              n/a" in proc.stdout.splitlines()
    proc = run_cli("eval", "--data", str(labels), "--cv", "3")  # CV on that slice alone
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[2] == "traffic    router              n/a              n/a              n/a"


# --------------------------------------------------------------------------- install / rollback (files)


def test_install_and_rollback_swap_files_byte_for_byte(tmp_path: Path) -> None:
    target = tmp_path / "installed" / "router.skops"
    write_jsonl(metrics_path_for(target), [{"old": 1}])
    target.write_bytes(b"old model")
    cand = tmp_path / "cand" / "router.skops"
    write_jsonl(metrics_path_for(cand), [{"new": 2}])
    cand.write_bytes(b"new model")
    assert install(cand, target) == rollback_path(target) == tmp_path / "installed" / "previous" / "router.skops"
    assert target.read_bytes() == b"new model" and metrics_path_for(target).read_text() == '{"new": 2}\n'
    assert rollback_path(target).read_bytes() == b"old model"
    assert metrics_path_for(rollback_path(target)).read_text() == '{"old": 1}\n'
    rollback(target)
    assert target.read_bytes() == b"old model" and metrics_path_for(target).read_text() == '{"old": 1}\n'
    assert rollback_path(target).read_bytes() == b"new model"
    rollback(target)  # a second rollback re-installs
    assert target.read_bytes() == b"new model"
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json", "previous", "router.skops"]
    target.with_name("other.skops").write_bytes(b"x")
    with pytest.raises(InstallError, match="in the target's folder"):
        install(target.with_name("other.skops"), target)
    with pytest.raises(InstallError, match="no rollback copy"):
        rollback(tmp_path / "elsewhere" / "router.skops")


# --------------------------------------------------------------------------- learning from traffic (dev data)


DEV_EVERY = 10  # the candidate trains on every 10th dev row (1,059 rows): the same mechanics, a tenth of the fit time


@pytest.fixture(scope="module")
def taught(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The shipped model installed at a target, and a candidate trained on dev rows + 400 scripted labels."""
    if not (DEV_DATA.is_file() and ARENA.is_file()):
        pytest.skip("shared data not available")
    d = tmp_path_factory.mktemp("teach")
    rows = traffic_labels()
    labels = write_jsonl(d / "labels.jsonl", rows)
    dev_lines = [line for line in DEV_DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    dev = d / "dev-subset.jsonl"
    dev.write_text("".join(line + "\n" for line in dev_lines[::DEV_EVERY]), encoding="utf-8")
    target = d / "installed" / "router.skops"
    target.parent.mkdir()
    target.write_bytes(DEFAULT_MODEL_PATH.read_bytes())
    metrics_path_for(target).write_bytes(metrics_path_for(DEFAULT_MODEL_PATH).read_bytes())
    cand = d / "cand" / "router.skops"
    proc = run_cli("train", "--data", str(dev), "--data", str(labels), "--out", str(cand), timeout=2400)
    assert proc.returncode == 0, proc.stderr
    return {"rows": rows, "labels": labels, "target": target, "cand": cand, "train_out": proc.stdout, "dir": d}


@needs_data
def test_a_few_hundred_labels_move_the_model(taught: dict) -> None:
    assert taught["train_out"].splitlines()[:3] == [
        f"wrote {taught['cand']} (+ metrics.json beside it): 1379 training rows",
        "traffic label rows weigh 1.65469 each (0 one-sided rows train one side only)",  # 0.5 * 1059 / 320
        f"held out for `classifier promote`: 80 most recent rows (ts >= {T0 + 60 * 320:.0f})",
    ]
    rows = taught["rows"]
    held = [r for r in rows if r["ts"] >= T0 + 60 * 320]
    assert len(held) == 80
    prompts = [r["prompt"] for r in held]
    coding = np.array([r["category"] == "coding" for r in held])
    weak = np.array([r["weak_correct"] for r in held])
    strong = np.ones(len(held), bool)
    current, cand = load_model(DEFAULT_MODEL_PATH), load_model(taught["cand"])
    assert cand.metadata["trained_on"]["held_out_from_ts"] == T0 + 60 * 320
    before, after = current.score_many(prompts), cand.score_many(prompts)
    gap_before = before[coding].mean() - before[~coding].mean()
    gap_after = after[coding].mean() - after[~coding].mean()
    apgr_before = M.summarize(before, weak, strong)["apgr"]
    apgr_after = M.summarize(after, weak, strong)["apgr"]
    print(f"held-out coding-vs-rest score gap {gap_before:.4f} -> {gap_after:.4f}, APGR {apgr_before:.4f} -> {apgr_after:.4f}")
    assert gap_after > gap_before + 0.02  # coding prompts now score clearly higher than the rest
    # the shipped model already ranks these coding prompts above the rest a little (its chat head: held-out
    # APGR 0.614 before learning), so 320 labels add +0.06 (to 0.677), not the +0.1 they added to a model blind
    # to open chat
    assert apgr_after > apgr_before + 0.05


@needs_data
def test_promote_installs_when_not_worse_refuses_when_worse_and_rollback_restores(taught: dict) -> None:
    labels, target, cand = str(taught["labels"]), taught["target"], taught["cand"]
    shipped = DEFAULT_MODEL_PATH.read_bytes()
    proc = run_cli("promote", "--labels", labels, "--candidate", str(cand), "--target", str(target), "--json")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    report = json.loads("\n".join(out[out.index("{") : out.index("}") + 1]))
    assert out[:2] == [f"current: {target}", f"candidate: {cand}"]
    assert out[2] == f"held-out labels: 80 rows labelled on both sides (candidate's hold-out cut, ts >= {T0 + 60 * 320:.0f})"
    print(proc.stdout)
    installed = re.fullmatch(
        rf"installed {re.escape(str(cand))} at {re.escape(str(target))} \(not worse: APGR difference CI lower bound "
        rf"\+(0\.\d{{3}}) >= -0\.020\); previous model kept at {re.escape(str(rollback_path(target)))} "
        r"\(`slm-gateway classifier rollback` restores it\)", out[-2])
    assert installed is not None, out[-2]
    assert float(installed.group(1)) > 0.0  # better, not merely not worse
    assert out[-1] == ("reload needed: POST /admin/reload to the gateway or send it SIGHUP "
                       "(or pass --gateway-url / --pid next time)")
    assert target.read_bytes() == cand.read_bytes()
    # The installed metrics.json is the candidate's plus the promotion: version (content hash) and held-out APGR,
    # which the gateway shows as slm_gateway_router_model_apgr{version}, and where they came from.
    version = "router-" + hashlib.sha256(cand.read_bytes()).hexdigest()[:12]
    apgr = report["candidate"]["apgr"]
    assert out[-3] == f"version {version}, held-out APGR {apgr:.3f} (written to the installed metrics.json)"
    installed_meta = json.loads(metrics_path_for(target).read_text())
    promotion = installed_meta.pop("promotion")
    assert installed_meta == dict(json.loads(metrics_path_for(cand).read_text()), version=version, apgr=apgr)
    assert isinstance(promotion.pop("promoted_at"), float)
    cand_report = report["candidate"]
    assert promotion == {
        "reason": report["reason"],
        "labels": {"path_name": "labels.jsonl", "rows": 400, "held_out_rows": 80},
        "apgr": apgr, "apgr_ci": cand_report["apgr_ci"], "cpt50": cand_report["cpt50"],
        "cpt50_ci": cand_report["cpt50_ci"], "local_share": cand_report["local_share"],
        "threshold": cand_report["threshold"], "apgr_difference": report["apgr_difference"],
        "apgr_difference_ci": report["apgr_difference_ci"],
        "previous": {"version": None, "apgr": report["current"]["apgr"]},
        "data": [{"path_name": "dev-subset.jsonl", "rows": 1059, "traffic_rows": 0},
                 {"path_name": "labels.jsonl", "rows": 400, "traffic_rows": 400}],
    }
    assert load_model(target).metadata["version"] == version
    assert rollback_path(target).read_bytes() == shipped
    # The shipped model is now the worse one: promoting it back is refused and changes nothing.
    proc = run_cli("promote", "--labels", labels, "--candidate", str(DEFAULT_MODEL_PATH), "--target", str(target))
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.splitlines()[2].startswith("held-out labels: 80 rows labelled on both sides (most recent 20%")
    print(proc.stdout)
    assert re.fullmatch(r"not installed: worse: APGR difference CI lower bound -0\.\d{3} < -0\.020",
                        proc.stdout.splitlines()[-1]), proc.stdout
    assert target.read_bytes() == cand.read_bytes() and rollback_path(target).read_bytes() == shipped
    # Rollback restores the previous file byte for byte (and its metrics.json).
    proc = run_cli("rollback", "--target", str(target))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == (f"restored the previous model at {target}; the replaced one is now at "
                                           f"{rollback_path(target)}")
    assert target.read_bytes() == shipped
    assert metrics_path_for(target).read_bytes() == metrics_path_for(DEFAULT_MODEL_PATH).read_bytes()
    assert rollback_path(target).read_bytes() == cand.read_bytes()


@needs_data
def test_promote_without_enough_evidence_installs_nothing(taught: dict) -> None:
    target, cand = taught["target"], taught["cand"]
    before = target.read_bytes()
    proc = run_cli("promote", "--labels", str(taught["labels"]), "--candidate", str(cand), "--target", str(target),
                   "--min-rows", "81")
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout.splitlines()[-1] == "not installed: only 80 held-out rows labelled on both sides (need 81)"
    same = write_jsonl(taught["dir"] / "same.jsonl", [dict(r, weak_correct=True) for r in taught["rows"]])
    proc = run_cli("promote", "--labels", str(same), "--candidate", str(cand), "--target", str(target))
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout.splitlines()[-1] == ("not installed: the upstream model is not better than the local one on "
                                            "the held-out rows (PGR undefined): nothing to route for")
    assert target.read_bytes() == before




# --------------------------------------------------------------------------- a running gateway picks it up

GATEWAY_KEY = "sk-gw-promote"
ADMIN_KEY = "sk-test-admin"  # /admin/reload takes the admin key only


@needs_data
def test_promote_and_rollback_reload_a_running_gateway(taught: dict, fake_upstream: str) -> None:
    pytest.importorskip("llama_cpp")
    import httpx

    from classifier.promote import PromoteConfig, threshold_for
    from tests.conftest import run_gateway

    target, cand = taught["target"], taught["cand"]
    assert target.read_bytes() == DEFAULT_MODEL_PATH.read_bytes()  # the previous test rolled back
    shipped_model, cand_model = load_model(target), load_model(cand)
    share = PromoteConfig().local_share
    t_shipped, t_cand = threshold_for(shipped_model, PromoteConfig()), threshold_for(cand_model, PromoteConfig())
    # a held-out coding prompt that the shipped model keeps local and the candidate sends upstream
    held = [r["prompt"] for r in taught["rows"] if r["ts"] >= T0 + 60 * 320 and r["category"] == "coding"]
    moved = [p for p in held if shipped_model.score_messages([{"role": "user", "content": p}]) < t_shipped
             and cand_model.score_messages([{"role": "user", "content": p}]) >= t_cand]
    assert moved, "the candidate sends no held-out coding prompt upstream that the shipped model kept local"
    policy = taught["dir"] / "policy.yaml"
    policy.write_text(f"rules:\n  - name: auto\n    action: auto\n    target_local_share: {share}\n")
    args = ("--upstream-url", fake_upstream, "--policy", str(policy), "--classifier-model", str(target),
            "--api-key", GATEWAY_KEY, "--admin-api-key", ADMIN_KEY)
    with run_gateway(*args) as gw:

        def route() -> str:
            body = {"model": "auto", "messages": [{"role": "user", "content": moved[0]}], "max_tokens": 2}
            r = httpx.post(f"{gw.base_url}/chat/completions", json=body, timeout=120,
                           headers={"authorization": f"Bearer {GATEWAY_KEY}"})
            assert r.status_code == 200, r.text
            return r.headers["x-gateway-route"]

        assert route() == "local"
        reload_line = f"POST {gw.root}/admin/reload: HTTP 200 reloaded (this process)"
        proc = run_cli("promote", "--labels", str(taught["labels"]), "--candidate", str(cand), "--target",
                       str(target), "--gateway-url", gw.root, env={"SLM_GATEWAY_ADMIN_KEY": ADMIN_KEY})
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[-1] == reload_line
        assert route() == "upstream"
        proc = run_cli("rollback", "--target", str(target), "--gateway-url", gw.root, "--admin-key", ADMIN_KEY)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[-1] == reload_line
        assert route() == "local"
        proc = run_cli("rollback", "--target", str(target), "--gateway-url", gw.root, "--admin-key", "sk-wrong")
        assert proc.returncode == 5
        assert proc.stderr.startswith(f"error: reload failed: POST {gw.root}/admin/reload: HTTP 401")
    rollback(target)  # leave the shipped model installed for any later test
