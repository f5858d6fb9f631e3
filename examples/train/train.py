#!/usr/bin/env python3
"""Trains Pulse's example propensity models and writes what the conformance test checks.

Reads the CSV that `cargo run -p pulse-scorer --example training_data` writes (features of
simulated readers after a month, the hidden propensity, a label drawn from it), keeps a
held-out set apart, and trains:

- an XGBoost binary:logistic model      -> propensity.xgb.json      (Booster.save_model)
- a LightGBM binary model               -> propensity.lgb.txt       (Booster.save_model)
- a LightGBM variant with zero_as_missing and `rfv` as a categorical feature, so that the
  conformance test covers LightGBM's zero and categorical rules too
                                        -> propensity.lgb-zero-cat.txt
- regression models of the hidden propensity itself (XGBoost reg:squarederror, LightGBM
  regression), so that conformance covers raw outputs too
                                        -> propensity-reg.xgb.json, propensity-reg.lgb.txt
- a logistic regression (numpy, Newton's method on standardized inputs, folded back into
  raw-scale coefficients)               -> propensity.logistic.toml

and writes the conformance rows (holdout.csv: the features only, missing values empty): 400
held-out readers, half of them with a missing value, and 40 rows whose values sit exactly on the
models' split thresholds; each model's own predictions for them (holdout.<model>.pred, one
per line, full precision); and the trainers' own explanations of the binary models' margins
for them (holdout.<model>.contribs.csv, a column per feature and then `bias`): XGBoost's
`pred_contribs=True, approx_contribs=True` (Saabas's path attribution, which Pulse computes
too) and LightGBM's `pred_contrib=True` (TreeSHAP, whose bias column is the trees' expected
value, as Pulse's is).

    python examples/train/train.py [--data examples/train/data/readers.csv] [--out examples/train]

Deterministic: fixed seeds and one thread per trainer.
"""

import argparse
import csv
import json
import math
import os

import lightgbm as lgb
import numpy as np
import xgboost as xgb

HOLDOUT_ROWS = 400
EDGE_ROWS = 40
NOT_FEATURES = ("propensity", "label")


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    features = [c for c in header if c not in NOT_FEATURES]
    index = [header.index(c) for c in features]
    x = np.array(
        [[float(r[i]) if r[i] != "" else math.nan for i in index] for r in rows],
        dtype=np.float64,
    )
    truth = np.array([float(r[header.index("propensity")]) for r in rows])
    y = np.array([float(r[header.index("label")]) for r in rows])
    return features, x, truth, y


def split(x, truth, y, seed=7):
    """A held-out set of HOLDOUT_ROWS rows, half of them with a missing value where possible."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    missing = [i for i in order if np.isnan(x[i]).any()]
    complete = [i for i in order if not np.isnan(x[i]).any()]
    take = missing[: HOLDOUT_ROWS // 2]
    take += complete[: HOLDOUT_ROWS - len(take)]
    held = np.zeros(len(y), dtype=bool)
    held[take] = True
    return (x[~held], truth[~held], y[~held]), (x[held], truth[held], y[held])


def edge_rows(rows, features, booster, model, n=EDGE_ROWS, seed=11):
    """Copies of held-out rows with about half their values replaced by split thresholds of the
    trained models on those features: XGBoost's (float32) for half the rows, LightGBM's
    (float64) for the other half."""
    xgb_thresholds = {j: [] for j in range(len(features))}
    for tree in json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]["trees"]:
        for left, j, cond in zip(tree["left_children"], tree["split_indices"], tree["split_conditions"]):
            if left != -1:
                xgb_thresholds[j].append(float(np.float32(cond)))
    lgb_thresholds = {j: [] for j in range(len(features))}

    def walk(node):
        if "split_feature" in node:
            if node.get("decision_type") == "<=":
                lgb_thresholds[node["split_feature"]].append(float(node["threshold"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in model.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        row = rows[rng.integers(len(rows))].copy()
        thresholds = xgb_thresholds if i % 2 == 0 else lgb_thresholds
        for j in range(len(features)):
            if thresholds[j] and rng.random() < 0.5:
                row[j] = thresholds[j][rng.integers(len(thresholds[j]))]
        out.append(row)
    return np.array(out)


def write_preds(path, preds):
    with open(path, "w") as f:
        for p in preds:
            # float32 outputs (XGBoost) widen exactly; repr round-trips a float64.
            f.write(repr(float(p)) + "\n")


def write_contribs(path, features, contribs):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(list(features) + ["bias"])
        for row in contribs:
            w.writerow([repr(float(v)) for v in row])


def auc(scores, labels):
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    pos = labels == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def logistic_regression(x, y, l2=1.0, steps=50):
    """Newton's method on standardized inputs (missing values imputed with the mean), folded
    back into raw-scale coefficients: z = intercept + sum(coefficient * x)."""
    mean = np.nanmean(x, axis=0)
    mean = np.where(np.isnan(mean), 0.0, mean)
    filled = np.where(np.isnan(x), mean, x)
    sd = filled.std(axis=0)
    scale = np.where(sd > 0, sd, 1.0)
    z = (filled - mean) / scale
    a = np.hstack([np.ones((len(z), 1)), z])
    w = np.zeros(a.shape[1])
    penalty = np.full(a.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(a @ w)))
        grad = a.T @ (p - y) + penalty * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(penalty)
        w -= np.linalg.solve(hess, grad)
    coef = np.where(sd > 0, w[1:] / scale, 0.0)
    intercept = w[0] - float(np.sum(coef * mean))
    return float(intercept), [float(c) for c in coef], [float(m) for m in mean]


def logistic_predict(intercept, coef, missing, row):
    """Exactly as Pulse's logistic model: the sum in file order, then the sigmoid."""
    z = intercept
    for c, m, v in zip(coef, missing, row):
        z += c * (m if math.isnan(v) else v)
    return 1.0 / (1.0 + math.exp(-z))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(here, "data", "readers.csv"))
    ap.add_argument("--out", default=here)
    args = ap.parse_args()

    features, x, truth, y = read(args.data)
    (xt, tt, yt), (xh, _, _) = split(x, truth, y)
    # A fifth of the rest only judges the models (AUC against the labels and the truth).
    cut = len(yt) * 4 // 5
    (xt, xe), (te, ye), yt = (xt[:cut], xt[cut:]), (tt[cut:], yt[cut:]), yt[:cut]
    out = lambda name: os.path.join(args.out, name)  # noqa: E731

    results = {"truth (the hidden propensity)": te}

    dtrain = xgb.DMatrix(xt, label=yt, feature_names=features)
    booster = xgb.train(
        {
            "objective": "binary:logistic",
            "max_depth": 4,
            "eta": 0.05,
            "min_child_weight": 5,
            "subsample": 0.8,
            "seed": 1,
            "nthread": 1,
        },
        dtrain,
        num_boost_round=200,
    )
    booster.save_model(out("propensity.xgb.json"))
    results["xgboost"] = booster.predict(xgb.DMatrix(xe, feature_names=features))

    common = {
        "objective": "binary",
        "num_leaves": 15,
        "learning_rate": 0.05,
        "min_data_in_leaf": 40,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": 1,
        "num_threads": 1,
        "deterministic": True,
        "verbose": -1,
    }
    model = lgb.train(common, lgb.Dataset(xt, yt, feature_name=features), num_boost_round=200)
    model.save_model(out("propensity.lgb.txt"))
    results["lightgbm"] = model.predict(xe)

    variant = lgb.train(
        {**common, "zero_as_missing": True, "max_cat_to_onehot": 2, "min_data_per_group": 20},
        lgb.Dataset(xt, yt, feature_name=features, categorical_feature=["rfv"]),
        num_boost_round=200,
    )
    variant.save_model(out("propensity.lgb-zero-cat.txt"))
    results["lightgbm (zero as missing, rfv categorical)"] = variant.predict(xe)

    # Regression objectives: the same trainers fitting the hidden propensity itself (a number,
    # not a label), so that conformance covers raw outputs too.
    reg_xgb = xgb.train(
        {"objective": "reg:squarederror", "max_depth": 4, "eta": 0.1, "seed": 1, "nthread": 1},
        xgb.DMatrix(xt, label=tt[:cut], feature_names=features),
        num_boost_round=100,
    )
    reg_xgb.save_model(out("propensity-reg.xgb.json"))
    reg_lgb = lgb.train(
        {**common, "objective": "regression"},
        lgb.Dataset(xt, tt[:cut], feature_name=features),
        num_boost_round=100,
    )
    reg_lgb.save_model(out("propensity-reg.lgb.txt"))

    intercept, coef, missing = logistic_regression(xt, yt)
    with open(out("propensity.logistic.toml"), "w") as f:
        f.write("# Logistic regression fitted by examples/train/train.py (numpy).\n")
        f.write("# p = 1 / (1 + exp(-(intercept + sum(coefficient * x)))); x = missing when absent.\n")
        f.write(f"intercept = {intercept!r}\n")
        for name, c, m in zip(features, coef, missing):
            f.write(f'\n[[features]]\nname = "{name}"\ncoefficient = {c!r}\nmissing = {m!r}\n')
    results["logistic regression"] = np.array(
        [logistic_predict(intercept, coef, missing, row) for row in xe]
    )

    # The conformance rows: the held-out readers, then rows whose values sit exactly on the
    # trained models' thresholds (where `<` and `<=`, f32 and f64 part ways).
    xh = np.vstack([xh, edge_rows(xh, features, booster, model)])
    with open(out("holdout.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(features)
        for row in xh:
            w.writerow(["" if math.isnan(v) else repr(float(v)) for v in row])
    write_preds(out("holdout.xgb.pred"), booster.predict(xgb.DMatrix(xh, feature_names=features)))
    write_preds(out("holdout.lgb.pred"), model.predict(xh))
    write_preds(out("holdout.lgb-zero-cat.pred"), variant.predict(xh))
    write_preds(out("holdout.xgb-reg.pred"), reg_xgb.predict(xgb.DMatrix(xh, feature_names=features)))
    write_preds(out("holdout.lgb-reg.pred"), reg_lgb.predict(xh))
    write_preds(
        out("holdout.logistic.pred"),
        [logistic_predict(intercept, coef, missing, row) for row in xh],
    )
    write_contribs(
        out("holdout.xgb.contribs.csv"),
        features,
        booster.predict(
            xgb.DMatrix(xh, feature_names=features), pred_contribs=True, approx_contribs=True
        ),
    )
    write_contribs(out("holdout.lgb.contribs.csv"), features, model.predict(xh, pred_contrib=True))

    print(
        f"{len(yt)} training rows, {len(ye)} evaluation rows, {len(xh)} conformance rows "
        f"({int(np.isnan(xh).any(axis=1).sum())} with a missing value)"
    )
    print("evaluation rows: AUC against the labels drawn from the hidden propensity, and the")
    print("correlation with the propensity itself")
    for name, scores in results.items():
        scores = np.asarray(scores)
        corr = np.corrcoef(scores, te)[0, 1]
        print(f"  {name:45} AUC {auc(scores, ye):.3f}  r {corr:.3f}")


if __name__ == "__main__":
    main()
