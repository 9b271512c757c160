"""Tests for the classifier package (router metrics, training, model loading, CLI)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from classifier import DEFAULT_MODEL_PATH, ModelLoadError, RouterModel, load_model
from classifier import metrics as M
from classifier.features import HAND_FEATURE_NAMES, PromptFeaturizer, hand_features
from classifier.model import messages_text, metrics_path_for
from classifier.data import RoutingDataset, load_dataset, make_labels, make_targets
from classifier.fit import RouterConfig, fit_router
from classifier.train import train

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_DATA = REPO_ROOT.parent / "shared/data/routing/dev.jsonl"


# --------------------------------------------------------------------------- metrics


def test_routing_curve_hand_computed() -> None:
    # 4 rows; weak acc = 2/4, strong acc = 3/4, gap = 0.25.
    scores = [0.9, 0.1, 0.5, 0.7]
    weak = [False, True, True, False]
    strong = [True, True, False, True]
    curve = M.routing_curve(scores, weak, strong, n_quantiles=4)
    # thresholds = quantiles {0.1, 0.4, 0.6, 0.75, 0.9} + inf
    #  inf  -> none strong: acc 0.50, pgr 0
    #  0.9  -> row0:        acc 0.75, pgr 1
    #  0.75 -> row0:        same point again
    #  0.6  -> rows 0,3:    acc 1.00, pgr 2
    #  0.4  -> rows 0,3,2:  acc 0.75, pgr 1
    #  0.1  -> all:         acc 0.75, pgr 1
    assert curve.weak_acc == 0.5 and curve.strong_acc == 0.75
    np.testing.assert_allclose(curve.strong_fraction, [0, 0.25, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve.pgr, [0, 1, 1, 2, 1, 1])
    # trapezoid: 0.25*0.5 + 0 + 0.25*1.5 + 0.25*1.5 + 0.25*1 = 1.125
    assert M.apgr(curve) == pytest.approx(1.125)
    assert M.cpt(curve, 0.5) == pytest.approx(0.125)  # halfway between (0,0) and (0.25,1)
    assert M.cpt(curve, 1.0) == pytest.approx(0.25)
    assert M.cpt(curve, 1.5) == pytest.approx(0.375)
    assert math.isnan(M.cpt(curve, 2.5))


def test_perfect_and_inverted_router() -> None:
    weak = [True, True, False, False]
    strong = [True, True, True, True]
    good = M.summarize([0, 0, 1, 1], weak, strong, n_quantiles=4)
    bad = M.summarize([1, 1, 0, 0], weak, strong, n_quantiles=4)
    # good: curve (0,0) (0.5,1) (1,1) -> area 0.25 + 0.5 = 0.75
    assert good["apgr"] == pytest.approx(0.75)
    assert good["cpt50"] == pytest.approx(0.25)
    assert good["cpt80"] == pytest.approx(0.40)
    # bad: curve (0,0) (0.5,0) (1,1) -> area 0.25
    assert bad["apgr"] == pytest.approx(0.25)
    assert bad["cpt50"] == pytest.approx(0.75)


def test_random_router_is_about_half_and_oracle_is_best() -> None:
    rng = np.random.default_rng(1)
    weak = rng.random(5000) < 0.6
    strong = weak | (rng.random(5000) < 0.5)
    rand = M.summarize(M.random_scores(5000, seed=3), weak, strong)
    orac = M.summarize(M.oracle_scores(weak, strong), weak, strong)
    assert rand["apgr"] == pytest.approx(0.5, abs=0.03)
    assert orac["apgr"] > 0.9 and orac["cpt50"] < rand["cpt50"]


def test_metrics_reject_bad_input() -> None:
    with pytest.raises(ValueError):
        M.routing_curve([0.1, 0.2], [True], [True, False])
    with pytest.raises(ValueError):  # strong not better than weak
        M.routing_curve([0.1, 0.2], [True, True], [True, False])


# --------------------------------------------------------------------------- features


def test_features_are_stateless_and_bounded() -> None:
    f = PromptFeaturizer(word_features=2**10, char_features=2**8)
    text = "What is 12 + 30?\nA. 42\nB. 41\nC. 40\nD. 43\nAnswer:"
    a = f.transform([text, "hi"])
    b = f.fit(["x"]).transform([text, "hi"])
    assert a.shape == (2, f.n_features_) and (a != b).nnz == 0
    hf = hand_features(text)
    assert len(hf) == len(HAND_FEATURE_NAMES)
    assert hf[HAND_FEATURE_NAMES.index("n_options")] == 1.0
    long = "word " * 100_000
    assert f.transform([long]).shape[0] == 1  # truncation keeps it cheap


def test_messages_text_prefers_last_user_turn() -> None:
    msgs = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "answer"},
        {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url", "image_url": {}}]},
    ]
    assert messages_text(msgs) == "second\nfirst question"
    assert messages_text([{"role": "system", "content": "only system"}]) == "only system"
    assert messages_text([{"role": "user", "content": None}]) == ""


# --------------------------------------------------------------------------- training


def _synthetic_rows(n: int = 240, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        hard = i % 2 == 0
        if i % 3 == 0:
            bench = "gsm8k"
            nums = rng.integers(2, 999, size=6 if hard else 2)
            prompt = f"Tom has {nums[0]} apples and buys {nums[1]} more" + (
                "".join(f", then gives away {x} percent and splits {x}/7" for x in nums[2:]) if hard else ""
            ) + f". How many now? (case {i})"
        else:
            bench = "mmlu"
            topic = "quantum field renormalization integral" if hard else "capital city of France"
            prompt = f"Question {i} about {topic}?\nA. one\nB. two\nC. three\nD. four\nAnswer:"
        weak_ok = bool(rng.random() < (0.3 if hard else 0.9))
        strong_ok = bool(weak_ok or rng.random() < 0.7)
        rows.append({"prompt": prompt, "benchmark": bench, "subject": "x", "weak_correct": weak_ok, "strong_correct": strong_ok})
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    d = tmp_path_factory.mktemp("router")
    data = d / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _synthetic_rows()), encoding="utf-8")
    out = d / "router.skops"
    metrics = train(data, out, RouterConfig(word_features=2**12), cv_folds=3)
    return data, out, metrics


def test_train_writes_model_and_metrics(trained: tuple[Path, Path, dict]) -> None:
    data, out, metrics = trained
    assert out.is_file() and metrics_path_for(out).is_file()
    on_disk = json.loads(metrics_path_for(out).read_text())
    assert on_disk["config"]["word_features"] == 2**12
    q = on_disk["score_quantiles"]
    assert 0.0 <= q["p0"] <= q["p50"] <= q["p100"] <= 1.0
    assert set(on_disk["cv"]["per_fold_mean_std"]) == {"gsm8k", "mmlu"}
    assert 0.0 <= on_disk["cv"]["per_fold_mean_std"]["mmlu"]["router"]["apgr"]["mean"] <= 2.0
    model = load_model(out)
    assert isinstance(model, RouterModel)
    assert model.metadata["config"]["label"] == "benefit"
    assert set(model.models) == {"mc+", "mc-", "all+", "all-"}  # 80 free-text rows < min_segment_rows
    prompts = load_dataset(data).prompts
    many = model.score_many(prompts)
    single = np.array([model.score(p) for p in prompts])
    np.testing.assert_allclose(many, single, atol=1e-6)  # fast path == sklearn path
    assert ((many >= 0) & (many <= 1)).all()
    # The learnt signal on clearly separable synthetic data goes the right way.
    hard = np.array(["quantum" in p for p in prompts])
    mm = np.array(["Answer:" in p for p in prompts])
    assert many[hard & mm].mean() > many[~hard & mm].mean()


def test_training_is_reproducible(trained: tuple[Path, Path, dict], tmp_path: Path) -> None:
    data, out, _ = trained
    out2 = tmp_path / "router.skops"
    train(data, out2, RouterConfig(word_features=2**12))
    prompts = load_dataset(data).prompts[:20]
    np.testing.assert_array_equal(load_model(out).score_many(prompts), load_model(out2).score_many(prompts))


def test_segments_and_fallback_model(tmp_path: Path) -> None:
    from classifier.features import segment
    assert segment("Q?\nA. x\nB. y\nC. z\nD. w\nAnswer:") == "mc"
    assert segment("How many apples does Tom have?") == "text"
    rows = [r for r in _synthetic_rows() if r["benchmark"] == "mmlu"][:150]
    ds = RoutingDataset([r["prompt"] for r in rows], np.array(["mmlu"] * len(rows), dtype=object),
                        np.array([r["weak_correct"] for r in rows]), np.array([r["strong_correct"] for r in rows]))
    router = fit_router(ds, RouterConfig(word_features=2**10))
    assert set(router.models) == {"mc+", "mc-", "all+", "all-"}  # no free-text rows -> "all" models
    assert 0.0 <= router.score("a free text question") <= 1.0
    single = fit_router(ds, RouterConfig(word_features=2**10, label="gain"))
    assert set(single.models) == {"mc", "all"}
    assert 0.0 <= single.score("a free text question") <= 1.0


def test_labels() -> None:
    ds = RoutingDataset(["a", "b", "c", "d"], np.array(["m"] * 4, dtype=object),
                        np.array([True, True, False, False]), np.array([True, False, True, False]))
    np.testing.assert_array_equal(make_labels(ds, "gain"), [False, False, True, False])
    np.testing.assert_array_equal(make_labels(ds, "weak_wrong"), [False, False, True, True])
    np.testing.assert_array_equal(make_labels(ds, "benefit"), make_labels(ds, "gain"))  # CV strata
    targets = make_targets(ds, "benefit")
    np.testing.assert_array_equal(targets["+"][0], [True, False, True, False])
    np.testing.assert_array_equal(targets["-"][0], [True, True, False, False])
    assert targets["+"][1].all() and targets["-"][1].all()  # both sides known on every row
    assert set(make_targets(ds, "gain")) == {""}
    with pytest.raises(ValueError):
        make_labels(ds, "nope")


def test_benefit_score_is_half_plus_half_probability_difference() -> None:
    rows = _synthetic_rows()
    ds = RoutingDataset([r["prompt"] for r in rows], np.array([r["benchmark"] for r in rows], dtype=object),
                        np.array([r["weak_correct"] for r in rows]), np.array([r["strong_correct"] for r in rows]))
    router = fit_router(ds, RouterConfig(word_features=2**10, tree_weight=0.0))
    X = router.featurizer.transform(ds.prompts[:10])
    for i, p in enumerate(ds.prompts[:10]):
        fam = "mc" if "Answer:" in p else "all"  # too few free-text rows for their own models
        ps = router.models[fam + "+"].predict_proba(X[i])[0, 1]
        pw = router.models[fam + "-"].predict_proba(X[i])[0, 1]
        assert router.score(p) == pytest.approx((1 + ps - pw) / 2, abs=1e-6)


def test_benefit_falls_back_to_gain_when_strong_is_always_right() -> None:
    rows = _synthetic_rows()
    ds = RoutingDataset([r["prompt"] for r in rows], np.array([r["benchmark"] for r in rows], dtype=object),
                        np.array([r["weak_correct"] for r in rows]), np.ones(len(rows), dtype=bool))
    router = fit_router(ds, RouterConfig(word_features=2**10))
    assert set(router.models) == {"mc", "all"}
    assert 0.0 <= router.score("anything") <= 1.0
    with pytest.raises(ValueError, match="single class"):
        fit_router(RoutingDataset(ds.prompts, ds.benchmark, ds.strong_correct, ds.strong_correct),
                   RouterConfig(word_features=2**10))


def test_model_without_partner_is_inconsistent(trained: tuple[Path, Path, dict]) -> None:
    _, out, _ = trained
    model = load_model(out)
    with pytest.raises(ValueError, match="partner"):
        RouterModel(model.featurizer, {"mc+": model.models["mc+"]})


def test_single_model_files_load_and_legacy_formats_are_refused(tmp_path: Path) -> None:
    import skops.io as sio

    rows = _synthetic_rows()
    ds = RoutingDataset([r["prompt"] for r in rows], np.array([r["benchmark"] for r in rows], dtype=object),
                        np.array([r["weak_correct"] for r in rows]), np.array([r["strong_correct"] for r in rows]))
    router = fit_router(ds, RouterConfig(word_features=2**10, label="gain", tree_weight=0.0))
    path = tmp_path / "single.skops"
    sio.dump({"format": "slm-gateway-router", "format_version": 5, "info": "{}",
              "featurizer": router.featurizer, "models": router.models}, path)
    loaded = load_model(path)
    np.testing.assert_allclose(loaded.score_many(ds.prompts[:5]), router.score_many(ds.prompts[:5]))
    for version in (2, 3, 4, 99):  # the readers of formats 2-4 were removed
        sio.dump({"format": "slm-gateway-router", "format_version": version, "info": "{}",
                  "featurizer": router.featurizer, "models": router.models}, path)
        with pytest.raises(ModelLoadError, match=r"format version %d, expected one of \[5\] \(older files: retrain" % version):
            load_model(path)
    # version-1 word-problem features were removed: such a featurizer is refused, not scored another way
    old = PromptFeaturizer(word_features=2**10, word_problem_weight=3.0)
    old.word_problem_version = 1
    sio.dump({"format": "slm-gateway-router", "format_version": 5, "info": "{}",
              "featurizer": old, "models": router.models}, path)
    with pytest.raises(ModelLoadError, match="word-problem features version 1, which this version no longer computes"):
        load_model(path)


def _subject_rows(n: int = 300, seed: int = 1) -> list[dict]:
    """Multiple-choice rows from three subjects with different weak/strong accuracy."""
    rng = np.random.default_rng(seed)
    topics = {
        "algebra": ("group ring homomorphism polynomial field", 0.3, 0.8),
        "geography": ("capital river mountain country border", 0.9, 0.95),
        "ethics": ("moral scenario wrong action character", 0.45, 0.85),
    }
    rows = []
    for i in range(n):
        subj = list(topics)[i % 3]
        words, pw, ps = topics[subj]
        picked = " ".join(rng.choice(words.split(), size=5))
        prompt = f"Item {i}: {picked}?\nA. one\nB. two\nC. three\nD. four\nAnswer:"
        rows.append({"prompt": prompt, "benchmark": "mmlu", "subject": subj,
                     "weak_correct": bool(rng.random() < pw), "strong_correct": bool(rng.random() < ps)})
    return rows


def test_word_problem_features_v2_and_dense_family_model() -> None:
    from classifier.features import WORD_PROBLEM_V2_FEATURE_NAMES, word_problem_features_v2
    from classifier.fit import _fit_dense_lr

    text = "Sam buys 3 boxes of 1,200 pens at $4.50 each, then gives away 25% and half the rest. How many are left?"
    wp = word_problem_features_v2(text)
    assert len(wp) == len(WORD_PROBLEM_V2_FEATURE_NAMES) and all(np.isfinite(wp))
    assert wp[WORD_PROBLEM_V2_FEATURE_NAMES.index("wp2_cents")] == pytest.approx(np.log1p(1.0))
    assert wp[WORD_PROBLEM_V2_FEATURE_NAMES.index("wp2_multiplier_words")] == pytest.approx(np.log1p(1.0))
    off = PromptFeaturizer(word_features=2**10)
    v2 = PromptFeaturizer(word_features=2**10, word_problem_weight=2.0)
    assert v2.n_features_ == off.n_features_ + len(WORD_PROBLEM_V2_FEATURE_NAMES)
    X = v2.transform([text, "hi", "Tom has 12 apples and eats 5. How many remain?"])
    idx, val = v2.compile_single()(text)
    dense = np.zeros(v2.n_features_)
    dense[idx] = val
    np.testing.assert_allclose(dense, X[0].toarray().ravel(), rtol=1e-6, atol=1e-7)
    # a dense-family model: weights only on the word-problem columns, scoring raw rows
    n_wp = len(WORD_PROBLEM_V2_FEATURE_NAMES)
    est = _fit_dense_lr(X, np.array([True, False, True]), n_wp, C=1.0, seed=0)
    assert est.coef_.shape == (1, v2.n_features_) and not est.coef_[0, : v2.n_features_ - n_wp].any()
    p = est.predict_proba(X)[:, 1]
    assert p[0] > p[1] and p[2] > p[1]
    idx, val = v2.compile_word_problem_only()(text)
    np.testing.assert_allclose(val, X[0].toarray().ravel()[idx], rtol=1e-6, atol=1e-7)
    assert set(idx) == set(range(v2.n_features_ - n_wp, v2.n_features_))


def test_subject_prior_head(tmp_path: Path) -> None:
    from classifier.model import SubjectPrior, save_model

    data = tmp_path / "subjects.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _subject_rows()), encoding="utf-8")
    ds = load_dataset(data)
    router = fit_router(ds, RouterConfig(word_features=2**10, subject_features=2**8))
    assert set(router.priors) == {"mc"}  # the subject only labels training rows
    head = router.priors["mc"]
    assert head.log_prob.shape == (3, 2**8) and head.weight == RouterConfig().subject_prior_weight
    many = router.score_many(ds.prompts)
    single = np.array([router.score(p) for p in ds.prompts])
    np.testing.assert_allclose(many, single, atol=1e-6)
    assert ((many >= 0) & (many <= 1)).all()
    subj = np.array([r["subject"] for r in _subject_rows()])
    assert many[subj == "algebra"].mean() > many[subj == "geography"].mean()
    # Without the head the scores are the plain benefit ones.
    plain = fit_router(ds, RouterConfig(word_features=2**10, subject_prior_weight=0.0))
    assert plain.priors == {}
    # Round trip through the file format, and refusal of a damaged head.
    path = save_model(router, tmp_path / "router.skops")
    np.testing.assert_allclose(load_model(path).score_many(ds.prompts[:10]), many[:10], atol=1e-6)
    bad = dict(head.to_params(), log_prob=np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="shapes"):
        SubjectPrior(bad)
    router.priors["mc"] = SubjectPrior(head.to_params())
    import skops.io as sio

    sio.dump({"format": "slm-gateway-router", "format_version": 5, "info": "{}", "featurizer": router.featurizer,
              "models": router.models, "priors": {"mc": bad}}, path)
    with pytest.raises(ModelLoadError, match="bad subject prior"):
        load_model(path)
    sio.dump({"format": "slm-gateway-router", "format_version": 5, "info": "{}", "featurizer": router.featurizer,
              "models": router.models, "priors": {"mc": dict(head.to_params(), weight=float("nan"))}}, path)
    with pytest.raises(ModelLoadError, match="bad subject prior"):
        load_model(path)


def test_tree_head(tmp_path: Path) -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    from classifier.model import TreeHead, save_model

    # Flattened trees reproduce the estimator exactly, one row or many.
    rng = np.random.default_rng(0)
    H = rng.random((400, len(HAND_FEATURE_NAMES)))
    y = H[:, 0] * H[:, 3] - H[:, 5] + rng.normal(size=400) * 0.1
    est = HistGradientBoostingRegressor(max_iter=30, max_leaf_nodes=7, early_stopping=False).fit(H, y)
    head = TreeHead.from_estimator(est, H.shape[1])
    np.testing.assert_allclose(head.predict_many(H), est.predict(H), atol=1e-12)
    np.testing.assert_allclose([head.predict(h) for h in H[:20]], est.predict(H[:20]), atol=1e-12)
    # A router with the head: fast path == sklearn path, round trip through the file format.
    data = tmp_path / "subjects.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _subject_rows()), encoding="utf-8")
    ds = load_dataset(data)
    router = fit_router(ds, RouterConfig(word_features=2**10, subject_features=2**8))
    assert set(router.trees) == {"mc"} and router.trees["mc"].weight == RouterConfig().tree_weight
    many = router.score_many(ds.prompts)
    np.testing.assert_allclose(many, [router.score(p) for p in ds.prompts], atol=1e-6)
    assert ((many >= 0) & (many <= 1)).all()
    assert fit_router(ds, RouterConfig(word_features=2**10, tree_weight=0.0)).trees == {}
    path = save_model(router, tmp_path / "router.skops")
    np.testing.assert_allclose(load_model(path).score_many(ds.prompts[:10]), many[:10], atol=1e-6)
    # Damaged heads are refused.
    params = router.trees["mc"].to_params()
    with pytest.raises(ValueError, match="out of range"):
        TreeHead(dict(params, left=np.full_like(params["left"], 10**6)))
    with pytest.raises(ValueError, match="non-finite"):
        TreeHead(dict(params, slope=float("nan")))
    import skops.io as sio

    sio.dump({"format": "slm-gateway-router", "format_version": 5, "info": "{}", "featurizer": router.featurizer,
              "models": router.models, "trees": {"mc": dict(params, weight=2.0)}}, path)
    with pytest.raises(ModelLoadError, match="bad tree head"):
        load_model(path)


# --------------------------------------------------------------------------- loading errors


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "nope.skops")


def test_corrupt_model_file(tmp_path: Path) -> None:
    bad = tmp_path / "router.skops"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(ModelLoadError) as exc:
        load_model(bad)
    assert str(bad) in str(exc.value) and "\n" not in str(exc.value)


def test_untrusted_types_are_refused(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "evil.skops"
    evil = FunctionTransformer(func=os.system)
    sio.dump({"format": "slm-gateway-router", "format_version": 2, "featurizer": evil, "models": {}}, path)
    with pytest.raises(ModelLoadError, match=r"untrusted types.*system"):
        load_model(path)


def test_wrong_payload_is_refused(tmp_path: Path) -> None:
    import skops.io as sio

    path = tmp_path / "other.skops"
    sio.dump({"hello": np.arange(3)}, path)
    with pytest.raises(ModelLoadError, match="not an slm-gateway router"):
        load_model(path)


def test_truncated_model_file(trained: tuple[Path, Path, dict], tmp_path: Path) -> None:
    _, out, _ = trained
    bad = tmp_path / "router.skops"
    bad.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    with pytest.raises(ModelLoadError):
        load_model(bad)
    assert zipfile.is_zipfile(out)


# --------------------------------------------------------------------------- CLI


def _run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "classifier.cli", *args],
        input=stdin, capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=120,
    )


def test_score_cli_contract(trained: tuple[Path, Path, dict]) -> None:
    _, out, _ = trained
    rows = [{"prompt": f"prompt number {i} " + "x" * i, "id": i} for i in range(25)]
    rows.insert(3, {"prompt": "", "id": "empty"})
    stdin = "".join(json.dumps(r) + "\n" for r in rows)
    proc = _run_cli("classifier", "score", "--model", str(out), stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(got) == len(rows)
    assert [g["id"] for g in got] == [r["id"] for r in rows]
    assert all(0.0 <= g["p_strong"] <= 1.0 for g in got)


def test_score_cli_bad_model_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.skops"
    bad.write_text("garbage")
    proc = _run_cli("classifier", "score", "--model", str(bad), stdin='{"prompt": "hi"}\n')
    assert proc.returncode == 1
    assert str(bad) in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_register_sets_func_on_leaves() -> None:
    import argparse

    from classifier.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    for argv in (["classifier", "train", "--data", "x"], ["classifier", "eval", "--data", "x"], ["classifier", "score"]):
        assert callable(parser.parse_args(argv).func)


# --------------------------------------------------------------------------- shipped model


@pytest.mark.skipif(not DEFAULT_MODEL_PATH.is_file(), reason="shipped model not built yet")
def test_shipped_model_loads_with_metadata() -> None:
    model = load_model()
    meta = model.metadata
    assert meta["config"]["label"] in ("benefit", "gain", "weak_wrong")
    assert meta["trained_on"]["rows"] > 10_000
    cv = meta["cv"]["per_fold_mean_std"]
    assert {"mmlu", "gsm8k"} <= set(cv)
    assert DEFAULT_MODEL_PATH.stat().st_size < 5 * 1024 * 1024
    p = model.score("What is 2 + 2?")
    assert 0.0 <= p <= 1.0
    ps = model.score_many(["hello", "Prove the Riemann hypothesis."])
    assert all(0.0 <= x <= 1.0 for x in ps)
    assert 0.0 <= model.score_messages([{"role": "user", "content": "hi"}]) <= 1.0


@pytest.mark.skipif(not DEV_DATA.is_file(), reason="dev data not available")
def test_dev_data_loads() -> None:
    ds = load_dataset(DEV_DATA)
    assert len(ds) > 10_000 and set(ds.benchmark) == {"mmlu", "gsm8k"}


def test_word_problem_features_stay_finite_on_huge_numbers() -> None:
    from classifier.features import WORD_PROBLEM_V2_FEATURE_NAMES, word_problem_features_v2

    text = "Compute " + "9" * 400 + " mod 7 and 1e5 times 3."  # 400 digits parse as float inf
    wp = word_problem_features_v2(text)
    assert np.isfinite(wp).all()
    assert wp[WORD_PROBLEM_V2_FEATURE_NAMES.index("wp2_max_log10")] == pytest.approx(np.log1p(np.log10(7.0)))
