"""``braid search --explain``, ``braid eval`` comparing pipelines, and ``braid tune``, end to end."""

from __future__ import annotations

import json

import pytest

from braid.pipelines.pipeline import load_pipeline
from braid.service.cli.main import main
from tests.pipelines.test_hybrid_pipeline import HYBRID


@pytest.fixture
def hybrid_file(tmp_path):
    path = tmp_path / "hybrid.toml"
    path.write_text(HYBRID)
    return path


def test_search_explain_prints_each_retrievers_rank(tiny_beir, tmp_path, hybrid_file, capsys):
    args = ["search", "--dataset", str(tiny_beir), "--index-dir", str(tmp_path / "idx"), "--pipeline", str(hybrid_file)]
    assert main([*args, "--explain", "-k", "3", "cat fish"]) == 0
    out = capsys.readouterr().out
    assert "beir #1 (" in out and "lucene #1 (" in out and "fused " in out
    assert main([*args, "--explain", "--json", "-k", "3", "cat fish"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["doc_id"] == "d2" and rows[0]["retrievers"]["beir"]["rank"] == 1
    assert main([*args, "-k", "5", "cat"]) == 2
    assert "k must be between 1 and the collection's 4 documents, got 5" in capsys.readouterr().err


def test_eval_compares_pipelines_with_significance_stage_latency_and_plot(tiny_beir, tmp_path, hybrid_file, capsys):
    out_dir = tmp_path / "results"
    args = ["eval", "--dataset", str(tiny_beir), "--index-dir", str(tmp_path / "idx"), "--output", str(out_dir)]
    assert main([*args, "--pipeline", "bm25", "--pipeline", str(hybrid_file), "--latency-sample", "4"]) == 0
    table = capsys.readouterr().out
    assert "two-sided paired t-test" in table and "two-bm25  retriever.lucene" in table
    assert main([*args, "--pipeline", "bm25", "--pipeline", str(hybrid_file), "--json", "--latency-sample", "4"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert rows[0]["p_values"] == {}
    assert set(rows[1]["p_values"]) == {"ndcg@10", "recall@100", "mrr@10"}
    assert all(0.0 <= p <= 1.0 for p in rows[1]["p_values"].values())
    assert {"retriever.beir", "retriever.lucene", "fusion"} <= set(rows[1]["stage_latency_ms"])
    png = out_dir / "tiny" / "quality_latency.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out_dir / "tiny" / "two-bm25.test.trec").is_file()


def test_tune_saves_weights_into_the_pipeline_file(tiny_beir, tmp_path, hybrid_file, capsys):
    (tiny_beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td4\t1\nq3\td3\t1\n")
    args = ["tune", "--dataset", str(tiny_beir), "--index-dir", str(tmp_path / "idx"), "--pipeline", str(hybrid_file)]
    assert main([*args, "--step", "0.5", "--json"]) == 0
    best = json.loads(capsys.readouterr().out)
    assert best["datasets"] == ["tiny/train"] and best["metric"] == "ndcg@10" and 0.0 <= best["value"] <= 1.0
    tuned = load_pipeline(str(hybrid_file))
    assert tuned.tuned["value"] == best["value"]
    assert set(tuned.fusion.weights) == {"beir", "lucene"} and sum(tuned.fusion.weights.values()) == pytest.approx(1)
    assert hybrid_file.read_text().startswith("# [fusion] tuned by `braid tune` on tiny/train")
    # The tuned pipeline, evaluated on the split it was tuned on, scores what the tuner measured.
    ev = ["eval", "--dataset", str(tiny_beir), "--index-dir", str(tmp_path / "idx"), "--output", str(tmp_path / "r")]
    assert main([*ev, "--pipeline", str(hybrid_file), "--split", "train", "--json", "--latency-sample", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["ndcg@10"] == pytest.approx(best["value"], abs=1e-6)
    assert main([*args, "--split", "test"]) == 2
    assert "tuning on the test split would leak" in capsys.readouterr().err
    assert main([*args, "--step", "0.3"]) == 2
    assert main(["tune", "--dataset", str(tiny_beir), "--pipeline", "bm25"]) == 2
    assert "give --output FILE" in capsys.readouterr().err


def test_tune_fit_logistic_saves_cross_validated_weights(tiny_beir, tmp_path, hybrid_file, capsys):
    (tiny_beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td4\t1\nq3\td3\t1\n")
    args = ["tune", "--dataset", str(tiny_beir), "--index-dir", str(tmp_path / "idx"), "--pipeline", str(hybrid_file)]
    assert main([*args, "--fit", "logistic", "--folds", "3", "--penalties", "0.01", "1", "--json"]) == 0
    best = json.loads(capsys.readouterr().out)
    assert best["fit"] == "logistic" and best["folds"] == 3 and best["penalty"] in (0.01, 1.0)
    assert best["fusion"]["method"] == "weighted" and 0.0 <= best["cross_validated"] <= 1.0
    tuned = load_pipeline(str(hybrid_file))
    assert tuned.tuned == {key: value for key, value in best.items() if key != "fusion"}
    assert sum(tuned.fusion.weights.values()) == pytest.approx(1, abs=1e-3)
    assert hybrid_file.read_text().startswith("# [fusion] fitted by `braid tune --fit logistic` on tiny/train")
    # The fitted pipeline, evaluated on the split it was fitted on, scores the value it records.
    ev = ["eval", "--dataset", str(tiny_beir), "--index-dir", str(tmp_path / "idx"), "--output", str(tmp_path / "r")]
    assert main([*ev, "--pipeline", str(hybrid_file), "--split", "train", "--json", "--latency-sample", "0"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["ndcg@10"] == pytest.approx(best["value"], abs=1e-6) and row["fusion"]["fit"] == "logistic"
    assert main([*ev, "--pipeline", str(hybrid_file), "--split", "train", "--latency-sample", "0"]) == 0
    assert "fitted by logistic regression on tiny/train; IN-SAMPLE" in capsys.readouterr().out
    for bad, message in (
        (["--methods", "rrf"], "--methods must include weighted"),
        (["--step", "0.05"], "--fit logistic has none: drop them"),
        (["--folds", "1"], "at least 2 folds"),
        (["--penalties", "0"], "finite numbers > 0"),
        ([], "at least 5 queries per tuning split; tiny/train has 3"),
    ):
        assert main([*args, "--fit", "logistic", *bad]) == 2
        assert message in capsys.readouterr().err
    loco = ["tune", "--loco", "--dataset", str(tiny_beir), "--dataset", "x", "--pipeline", str(hybrid_file)]
    assert main([*loco, "--fit", "logistic"]) == 2
    assert "drop --fit" in capsys.readouterr().err


def test_tune_per_dataset_saves_the_collections_own_fusion(tiny_beir, tmp_path, hybrid_file, capsys):
    (tiny_beir / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td4\t1\nq3\td3\t1\n")
    before = load_pipeline(str(hybrid_file))
    args = ["tune", "--dataset", str(tiny_beir), "--index-dir", str(tmp_path / "idx"), "--pipeline", str(hybrid_file)]
    assert main([*args, "--split", "dev", "--per-dataset", "--step", "0.5", "--rrf-k", "1", "--json"]) == 0
    (best,) = json.loads(capsys.readouterr().out)
    assert best["datasets"] == ["tiny/dev"]
    tuned = load_pipeline(str(hybrid_file))
    # [fusion] is untouched; the collection's own setting holds what the tuner found best.
    assert tuned.fusion == before.fusion and tuned.tuned == before.tuned
    assert tuned.per_dataset["tiny"].fusion.to_dict() == best["fusion"]
    assert tuned.per_dataset["tiny"].tuned["value"] == best["value"]
    assert "[per_dataset.tiny.fusion]" in hybrid_file.read_text()
    ev = ["eval", "--dataset", str(tiny_beir), "--index-dir", str(tmp_path / "idx"), "--output", str(tmp_path / "r")]
    assert main([*ev, "--pipeline", str(hybrid_file), "--split", "dev", "--json", "--latency-sample", "0"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["ndcg@10"] == pytest.approx(best["value"], abs=1e-6)
    # It says which fusion ran, where it was tuned, and that this split was among its tuning data.
    expected = {**best["fusion"], "per_dataset": True, "tuned_on": ["tiny/dev"], "fit": "grid", "in_sample": True}
    assert row["fusion"] == expected
    assert main([*ev, "--pipeline", str(hybrid_file), "--split", "dev", "--latency-sample", "0"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("fusion of two-bm25"))
    assert "tuned on tiny/dev; IN-SAMPLE" in line and "(this collection's own)" in line


THIRD = '[[retrievers]]\nname = "c"\nkind = "bm25"\nk1 = 3.0\nb = 1.0\ndepth = 4\n'
WITH_C = HYBRID.replace("[fusion]", THIRD + "[fusion]").replace("lucene = 0.3 }", "lucene = 0.3, c = 0.0 }")


def test_tune_retrievers_tunes_some_weights_and_gives_the_others_zero(tiny_beir, tmp_path, capsys):
    (tiny_beir / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td4\t1\nq3\td3\t1\n")
    three, two = tmp_path / "three.toml", tmp_path / "two.toml"
    three.write_text(WITH_C)
    # The same two retrievers alone: tuning them must find what tuning them inside the larger pipeline finds.
    two.write_text(HYBRID.replace('[[retrievers]]\nname = "lucene"', '[[retrievers]]\nname = "c"', 1))
    two.write_text(two.read_text().replace("k1 = 1.2\nb = 0.75\ndepth = 4", "k1 = 3.0\nb = 1.0\ndepth = 4"))
    two.write_text(two.read_text().replace("lucene = 0.3", "c = 0.3"))
    grid = ["--split", "dev", "--step", "0.25", "--rrf-k", "1", "--json", "--index-dir", str(tmp_path / "idx")]
    args = ["tune", "--dataset", str(tiny_beir), *grid]
    assert main([*args, "--pipeline", str(two), "--output", str(tmp_path / "alone.toml")]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert main([*args, "--pipeline", str(three), "--per-dataset", "--retrievers", "c", "beir"]) == 0
    (best,) = json.loads(capsys.readouterr().out)
    assert best["retrievers"] == ["beir", "c"] and best["value"] == alone["value"]
    fusion = load_pipeline(str(three)).per_dataset["tiny"].fusion
    assert fusion.weights == {**alone["fusion"]["weights"], "lucene": 0.0}
    assert "over c, beir (the other retrievers at weight 0)" in three.read_text().splitlines()[0]
    ev = ["eval", "--dataset", str(tiny_beir), "--index-dir", str(tmp_path / "idx"), "--output", str(tmp_path / "r")]
    assert main([*ev, "--pipeline", str(three), "--split", "dev", "--json", "--latency-sample", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["ndcg@10"] == pytest.approx(best["value"], abs=1e-6)
    for bad, message in (
        (["--retrievers", "beir", "x"], "--retrievers: unknown 'x' (allowed: beir, lucene, c)"),
        (["--retrievers", "beir"], "--retrievers: name two or more"),
        (["--retrievers", "beir", "beir"], "--retrievers: name two or more"),
    ):
        assert main([*args, "--pipeline", str(three), *bad]) == 2, bad
        assert message in capsys.readouterr().err, bad
    loco = ["tune", "--loco", "--dataset", str(tiny_beir), "--dataset", "x", "--pipeline", str(three)]
    assert main([*loco, "--retrievers", "beir", "c"]) == 2
    assert "drop --retrievers" in capsys.readouterr().err


def _collections(tmp_path):
    """Three tiny collections: one with a train split, one with a dev split, one with judged (test) queries only."""
    from tests.conftest import write_beir

    qrels = {
        "alpha": [("q1", "d2", 1), ("q2", "d4", 1), ("q3", "d3", 1)],
        "beta": [("q1", "d1", 1), ("q2", "d1", 2), ("q3", "d3", 1)],
        "gamma": [("q1", "d2", 2), ("q2", "d4", 1), ("q3", "d1", 1)],
    }
    roots = {name: write_beir(tmp_path / name, qrels=rows) for name, rows in qrels.items()}
    (roots["alpha"] / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td4\t1\nq3\td3\t1\n")
    (roots["beta"] / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td1\t1\nq3\td3\t1\n")
    return roots


def test_tune_loco_chooses_each_fold_without_its_collection(tmp_path, hybrid_file, capsys):
    roots = _collections(tmp_path)
    idx = ["--index-dir", str(tmp_path / "idx")]
    grid = ["--step", "0.5", "--rrf-k", "1", "60"]
    datasets = [arg for root in roots.values() for arg in ("--dataset", str(root))]
    loco = ["tune", "--loco", *datasets, *idx, *grid, "--pipeline", str(hybrid_file), "--report", str(tmp_path / "r")]
    assert main([*loco, "--output", str(tmp_path / "default.toml"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((tmp_path / "r" / "loco" / "two-bm25.json").read_text())
    folds = {row["left_out"]: row for row in report["collections"]}
    # Each collection lends its train split, else its dev split, else its judged queries, and never to its own fold.
    assert folds["alpha/test"]["tuned_on"] == ["beta/dev", "gamma/test"]
    assert folds["gamma/test"]["tuned_on"] == ["alpha/train", "beta/dev"]
    # The gamma fold is what `braid tune` picks on alpha/train + beta/dev, and scores what `braid eval` measures.
    tuned_file = tmp_path / "tuned.toml"
    plain = ["tune", "--dataset", str(roots["alpha"]), "--split", "train", "--dataset", str(roots["beta"]), "--split"]
    plain += ["dev", *idx, *grid, "--normalizations", "zscore", "minmax", "--pipeline", str(hybrid_file)]
    assert main([*plain, "--output", str(tuned_file), "--json"]) == 0
    best = json.loads(capsys.readouterr().out)
    joint = folds["gamma/test"]["families"]["joint"]
    assert joint["fusion"] == best["fusion"] and joint["tuning"] == pytest.approx(best["value"], abs=1e-6)
    ev = ["eval", "--dataset", str(roots["gamma"]), *idx, "--output", str(tmp_path / "e"), "--latency-sample", "0"]
    assert main([*ev, "--pipeline", str(tuned_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ndcg@10"] == pytest.approx(joint["test"], abs=1e-6)
    # Naive RRF and each single retriever are scored on the same left-out test split.
    assert main([*ev, "--pipeline", "bm25-lucene", "--json"]) == 0  # k1 1.2, b 0.75, as retriever "lucene"
    bm25 = json.loads(capsys.readouterr().out)["ndcg@10"]
    assert folds["gamma/test"]["singles"]["lucene"] == pytest.approx(bm25, abs=1e-6)
    # `robust` picks, among the settings with the best worst-case margin, the best mean: never above joint's mean.
    for fold in folds.values():
        assert fold["families"]["robust"]["tuning"] <= fold["families"]["joint"]["tuning"] + 1e-9
    for family, verdicts in report["meets"].items():
        assert set(verdicts) == {"alpha", "beta", "gamma"}, family
    # --output holds the joint family fitted on all three collections, with where it came from.
    default = load_pipeline(str(tmp_path / "default.toml"))
    assert default.tuned["datasets"] == ["alpha/train", "beta/dev", "gamma/test"]
    assert default.fusion.to_dict() == report["defaults"]["joint"]["fusion"]
    assert "chosen by `braid tune --loco`" in (tmp_path / "default.toml").read_text()


def test_tune_loco_baseline_is_one_more_bound(tmp_path, hybrid_file, capsys):
    roots = _collections(tmp_path)
    datasets = [arg for root in roots.values() for arg in ("--dataset", str(root))]
    loco = ["tune", "--loco", *datasets, "--index-dir", str(tmp_path / "idx"), "--step", "0.5", "--rrf-k", "1", "60"]
    loco += ["--pipeline", str(hybrid_file), "--report", str(tmp_path / "r"), "--tolerance", "0"]
    assert main([*loco, "--baseline", "bm25-lucene", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["baseline"] == "bm25-lucene"
    for fold in report["collections"]:
        # The baseline as it ships, on the left-out test split: bm25-lucene is the pipeline's retriever "lucene".
        assert fold["baseline"] == pytest.approx(fold["singles"]["lucene"], abs=1e-6)
        name = fold["left_out"].split("/")[0]
        bar = max(*fold["singles"].values(), fold["baseline"])
        for family, chosen in fold["families"].items():
            expected = chosen["test"] >= bar and chosen["test"] >= fold["naive_rrf"]
            assert report["meets"][family][name] == expected, (family, name)
    assert main([*loco, "--baseline", "bm25-lucene"]) == 0
    table = capsys.readouterr().out
    assert " bm25-lucene " in table.splitlines()[1] and "and of bm25-lucene" in table
    plain = ["tune", "--dataset", str(roots["alpha"]), "--pipeline", str(hybrid_file), "--baseline", "hybrid"]
    assert main(plain) == 2
    assert "add --loco" in capsys.readouterr().err


def test_tune_loco_refuses_what_the_protocol_cannot_do(tmp_path, hybrid_file, capsys):
    roots = _collections(tmp_path)
    base = ["tune", "--loco", "--pipeline", str(hybrid_file), "--index-dir", str(tmp_path / "idx")]
    assert main([*base, "--dataset", str(roots["alpha"])]) == 2
    assert "two or more different --dataset" in capsys.readouterr().err
    assert main([*base, "--dataset", str(roots["alpha"]), "--dataset", str(roots["beta"]), "--split", "dev"]) == 2
    assert "drop --split" in capsys.readouterr().err
    assert main([*base, "--dataset", str(roots["alpha"]), "--dataset", str(roots["beta"]), "--step", "0.3"]) == 2
    assert "--step must divide 1" in capsys.readouterr().err


# The same two BM25 retrievers but for lucene's k1 and b: anchored on two-bm25, only that lucene is added.
THREE_BM25 = HYBRID.replace('"two-bm25"', '"three"').replace("k1 = 1.2\nb = 0.75", "k1 = 2.0\nb = 0.3")


def _three_bm25_loco(tmp_path, hybrid_file):
    """Three tiny collections, and `braid tune --loco` of THREE_BM25 held to two-bm25 over them."""
    roots = _collections(tmp_path)
    target = tmp_path / "three.toml"
    target.write_text(THREE_BM25)
    datasets = [arg for root in roots.values() for arg in ("--dataset", str(root))]
    loco = ["tune", "--loco", *datasets, "--index-dir", str(tmp_path / "idx"), "--step", "0.5", "--rrf-k", "60"]
    return roots, [*loco, "--pipeline", str(target), "--baseline", str(hybrid_file), "--report", str(tmp_path / "r")]


def test_tune_loco_anchor_holds_the_baseline_and_moves_off_it_only_where_tuning_agrees(tmp_path, hybrid_file, capsys):
    roots, loco = _three_bm25_loco(tmp_path, hybrid_file)
    output = tmp_path / "anchored.toml"
    anchored = [*loco, "--anchor", "--anchor-step", "0.25"]
    assert main([*anchored, "--family", "min-gain", "--output", str(output), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["anchored"] and report["baseline"] == "two-bm25"
    assert {"joint", "robust", "anchored", "no-loss", "min-gain"} <= set(report["families"])
    ev = ["eval", "--index-dir", str(tmp_path / "idx"), "--output", str(tmp_path / "e"), "--latency-sample", "0"]
    for fold in report["collections"]:
        # The baseline is read off the anchored pipeline's lists: what `braid eval` gives the baseline itself.
        name = fold["left_out"].split("/")[0]
        assert main([*ev, "--dataset", str(roots[name]), "--pipeline", str(hybrid_file), "--json"]) == 0
        assert fold["baseline"] == pytest.approx(json.loads(capsys.readouterr().out)["ndcg@10"], abs=1e-6)
        for family, chosen in fold["families"].items():
            # "near": the baseline's bound alone (within --tolerance 0.005 of it), beside "meets".
            assert report["near_baseline"][family][name] == (chosen["test"] >= fold["baseline"] - 0.005), family
        for family in ("anchored", "no-loss", "min-gain"):
            weights = fold["families"][family]["fusion"]["weights"]
            # Anchored settings keep the baseline's proportions (beir 0.7 : lucene 0.3) whatever share they keep.
            assert weights["beir"] * 0.3 == pytest.approx(weights["lucene"] * 0.7, abs=1e-9), (family, weights)
    # Fitted on all three: no-loss never loses to the baseline on a tuning collection, and min-gain's smallest
    # gain is the largest of any anchored setting (no-loss's included).
    defaults = report["defaults"]
    assert defaults["no-loss"]["smallest_gain"] >= 0
    assert defaults["min-gain"]["smallest_gain"] >= defaults["no-loss"]["smallest_gain"]
    assert defaults["min-gain"]["anchor"] == "two-bm25" and defaults["min-gain"]["anchor_step"] == 0.25
    # --output receives the anchored pipeline (the baseline's retrievers, then the target's renamed one), less the
    # retrievers the fitted fusion gives weight 0.
    saved = load_pipeline(str(output))
    weights = defaults["min-gain"]["fusion"]["weights"]
    assert list(weights) == ["beir", "lucene", "three.lucene"] and 0.0 in weights.values()  # one to leave out
    assert [r.name for r in saved.retrievers] == [name for name, weight in weights.items() if weight > 0]
    assert saved.fusion.weights == {name: weight for name, weight in weights.items() if weight > 0}
    assert main([*anchored]) == 0
    table = capsys.readouterr().out
    assert "no-loss" in table.splitlines()[1] and "min-gain" in table and "clear-gain" in table
    assert any(line.startswith("near two-bm25") for line in table.splitlines())


def test_tune_loco_clear_gain_moves_off_the_baseline_only_by_the_tolerance(tmp_path, hybrid_file, capsys):
    _, loco = _three_bm25_loco(tmp_path, hybrid_file)
    loco += ["--anchor", "--anchor-step", "0.25", "--json"]
    # A margin of 0 asks what no-loss asks: at least as good as the baseline everywhere.
    assert main([*loco, "--tolerance", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    for fold in report["collections"]:
        assert fold["families"]["clear-gain"] == fold["families"]["no-loss"]
    assert report["defaults"]["clear-gain"]["fusion"] == report["defaults"]["no-loss"]["fusion"]
    # No setting gains 0.99 anywhere: the baseline itself, in every fold and fitted on all, so within any bound of it.
    output = tmp_path / "kept.toml"
    clear = [*loco, "--tolerance", "0.99", "--family", "clear-gain", "--output", str(output)]
    assert main(clear) == 0
    report = json.loads(capsys.readouterr().out)
    baseline = {"beir": 0.7, "lucene": 0.3, "three.lucene": 0.0}
    for fold in report["collections"]:
        chosen = fold["families"]["clear-gain"]
        assert chosen["fusion"]["weights"] == pytest.approx(baseline) and chosen["test"] == fold["baseline"]
    assert all(report["near_baseline"]["clear-gain"].values())
    assert report["defaults"]["clear-gain"]["smallest_gain"] == 0
    # Without --keep-unweighted the saved pipeline is the baseline's two retrievers; with it, all three.
    assert [r.name for r in load_pipeline(str(output)).retrievers] == ["beir", "lucene"]
    assert main([*clear, "--keep-unweighted"]) == 0
    capsys.readouterr()
    kept = load_pipeline(str(output))
    assert [r.name for r in kept.retrievers] == ["beir", "lucene", "three.lucene"]
    assert kept.fusion.weights == pytest.approx(baseline) and "clear-gain" in kept.tuned["protocol"]


def test_tune_loco_anchor_refuses_what_it_cannot_anchor(tmp_path, hybrid_file, capsys):
    roots = _collections(tmp_path)
    datasets = [arg for root in list(roots.values())[:2] for arg in ("--dataset", str(root))]
    loco = ["tune", "--loco", *datasets, "--index-dir", str(tmp_path / "idx"), "--pipeline", str(hybrid_file)]
    for extra, message in (
        (["--anchor"], "give --baseline"),
        (["--family", "no-loss"], "add --anchor"),
        (["--baseline", "hybrid", "--anchor-step", "0.2"], "--anchor-step sets the grid of --anchor"),
        (["--anchor", "--baseline", str(hybrid_file)], "adds no retriever"),
        (["--anchor", "--baseline", "hybrid-rrf"], "must fuse by a weighted sum"),
        (["--anchor", "--baseline", "bm25-lucene", "--anchor-step", "0.3"], "--anchor-step must divide 1"),
        (["--baseline", "hybrid", "--keep-unweighted", "--output", str(tmp_path / "o.toml")], "add both"),
        (["--anchor", "--baseline", "bm25-lucene", "--keep-unweighted"], "add both"),
    ):
        assert main([*loco, *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
    plain = ["tune", "--dataset", str(roots["alpha"]), "--pipeline", str(hybrid_file), "--anchor"]
    assert main(plain) == 2
    assert "--anchor belongs to the leave-one-collection-out protocol" in capsys.readouterr().err
