"""Issue 6's pictures: learning curves, alignment curves, the depth experiment and t-SNE maps in
``dfa-report --out``; the features file they are drawn from; the t-SNE preset end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from dfa_cli import report
from dfa_cli.report import cli as report_cli
from dfa_cli.report import figures, plots, tsne
from dfa_cli.training.features import FEATURES, FeatureDump
from dfa_cli.nets.fc import FCNet
from dfa_cli.runs.records import RunRecord
from dfa_cli.run import train

from conftest import compose_config, run_cli, write_fake_mnist
from test_report import PNG_SIGNATURE, PROTOCOL_SUMMARY, hydra_config


def write_record(directory, *, epochs=3, layers=2, alignment=True, eval_train=True, features=None, **fields):
    """A finished run as dfa-run leaves it, with issue 6's extra keys in metrics.jsonl."""
    summary = {**PROTOCOL_SUMMARY, **fields}
    (directory / ".hydra").mkdir(parents=True, exist_ok=True)
    (directory / ".hydra" / "config.yaml").write_text(yaml.safe_dump(hydra_config(summary)))
    record = RunRecord(directory)
    keys = ["delta_angle", "weight_angle"] + (["fa_feedback_angle"] if summary["method"] == "fa" else [])
    for epoch in range(1, epochs + 1):
        row = {"epoch": epoch, "train_loss": 0.1, "train_error": 10.0 / epoch ** 2, "test_error": 12.0 / epoch,
               "test_loss": 0.1, "lr": 1e-4, "seconds": 0.5, "elapsed": epoch}
        if eval_train:
            row.update(train_error_eval=8.0 / epoch ** 3, train_loss_eval=0.05)
        if alignment:
            row["alignment"] = {k: [90.0 - 10 * epoch - l for l in range(layers)] for k in keys}
            row["alignment"]["delta_angle"][0] = None if epoch == 1 else row["alignment"]["delta_angle"][0]
            row["alignment"]["measurements"] = 9
        record.log_epoch(row)
    if features is not None:
        np.savez_compressed(directory / FEATURES, **features)
    record.write_summary({**summary, "epochs": epochs, "test_error": 4.0, "best_test_error": 4.0,
                          "train_error": 1.0})
    return directory


def fake_features(n=60, widths=(8, 8, 8), seed=0) -> dict:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    x = rng.random((n, 20)).astype(np.float32) + labels[:, None] * 0.3
    arrays = {"labels": labels, "index": np.arange(n), "input": x}
    for i, w in enumerate(widths, 1):
        arrays[f"hidden{i}"] = np.tanh(x[:, :w] * i).astype(np.float32)
    arrays["layers"] = np.array(["input"] + [f"hidden{i}" for i in range(1, len(widths) + 1)])
    return arrays


def pngs(folder):
    return {p.name: p for p in folder.glob("*.png")}


def test_report_out_draws_learning_alignment_depth_and_tsne_figures(tmp_path, capsys):
    runs = tmp_path / "results"
    for method in ("bp", "fa", "dfa"):
        for seed in (0, 1):
            write_record(runs / f"2x800_{method}_{seed}", method=method, seed=seed)
            write_record(runs / f"deep_{method}_{seed}", method=method, seed=seed, model="fc240x100",
                         hidden=[240] * 100, layers=100, alignment=method != "bp")
    for method in ("bp", "dfa"):   # the t-SNE experiment: 3x400 tanh, no paper row → other runs
        write_record(runs / f"tsne_{method}", method=method, seed=0, model="fc400x3", hidden=[400] * 3,
                     alignment=False, eval_train=False, features=fake_features(seed=1))
    out = tmp_path / "report"
    report.main([str(runs), "--out", str(out), "--tsne-points", "40"])
    assert "wrote" in capsys.readouterr().err
    names = pngs(out / "figures")
    expected = {"learning-curves_table1-mnist_2x800-tanh.png", "learning-curves_table1-mnist_100x240-tanh.png",
                "alignment_table1-mnist_2x800-tanh_fa.png",
                "alignment_table1-mnist_2x800-tanh_dfa.png", "alignment_table1-mnist_100x240-tanh_dfa.png",
                "depth_table1-mnist_100x240-tanh.png", "learning-curves_other-runs_mnist_3x400-tanh.png",
                "tsne_other-runs_mnist_3x400-tanh.png", "test-error_table1-mnist_2x800-tanh.png",
                "ours-vs-paper_table1-mnist.png"}
    assert expected <= set(names), sorted(names)
    assert not any(n.startswith("alignment") and n.endswith("_bp.png") for n in names)   # BP's angle is 0
    assert not any(n.startswith("alignment_other-runs") for n in names)   # nor did the t-SNE runs
    assert all(p.read_bytes()[:8] == PNG_SIGNATURE for p in names.values())


def test_no_new_figures_without_their_data(tmp_path, capsys):
    write_record(tmp_path / "results" / "plain", alignment=False, eval_train=False)
    report.main([str(tmp_path / "results"), "--out", str(tmp_path / "out")])
    names = set(pngs(tmp_path / "out" / "figures"))
    assert "learning-curves_table1-mnist_2x800-tanh.png" in names   # learning curves need only metrics
    assert not any(("alignment" in n) or ("tsne" in n) or n.startswith(("depth", "paired")) for n in names)


def test_alignment_figure_of_a_deep_net_shows_a_subset_of_layers(tmp_path):
    paths = [str(write_record(tmp_path / f"r{s}", method="dfa", seed=s, layers=100)) for s in (0, 1)]
    assert figures._shown_layers(100) == [0, 14, 28, 42, 57, 71, 85, 99]
    assert figures._shown_layers(3) == [0, 1, 2]
    path = figures.alignment_figure("deep", paths, tmp_path / "a.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE

    def first_layer(row, where):
        return figures._angles(row, "delta_angle", where)[0]
    (curve, _) = plots.seed_series(paths, first_layer)
    assert curve.dropna().index.tolist() == [2, 3]   # epoch 1's null is left out, not drawn as 0


def test_tsne_on_a_tiny_subset(tmp_path):
    arrays = fake_features(n=50)
    emb, cached = tsne.tsne_embedding(arrays["hidden1"])
    assert emb.shape == (50, 2) and np.isfinite(emb).all() and not cached
    files = []
    for method in ("bp", "dfa"):
        np.savez_compressed(tmp_path / f"{method}.npz", **arrays)
        files.append((method, tmp_path / f"{method}.npz"))
    path = tsne.tsne_figure("tiny", files, tmp_path / "tsne.png", points=30)
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_tsne_points_must_be_positive(tmp_path):
    with pytest.raises(SystemExit):
        report_cli.parse_args([str(tmp_path), "--tsne-points", "0"])
    assert report_cli.parse_args([str(tmp_path)]).tsne_points == 1000


# ---- the features file ----------------------------------------------------------------------
def test_feature_dump_holds_input_each_hidden_layer_and_labels(tmp_path):
    net = FCNet([784, 16, 12, 10], "tanh", "dfa", [0, 1], init="uniform", dropout_hidden=0.5)

    class Data:
        x_test = torch.rand(30, 784)
        y_test = torch.randint(0, 10, (30,))
    path = FeatureDump(n_examples=20)(net, Data, 1, tmp_path)
    assert path == tmp_path / FEATURES and net.training   # the mode is given back
    with np.load(path) as z:
        assert list(z["layers"]) == ["input", "hidden1", "hidden2"]
        assert z["input"].shape == (20, 784) and z["hidden1"].shape == (20, 16) and z["hidden2"].shape == (20, 12)
        assert (z["labels"] == Data.y_test[:20].numpy()).all() and (z["index"] == np.arange(20)).all()
        x = Data.x_test[:20]
        h1 = torch.tanh(x @ net.weights[0][1] + net.biases[0][1])      # replica 1, eval mode: no dropout
        h2 = torch.tanh(h1 @ net.weights[1][1] + net.biases[1][1])
        assert np.allclose(z["hidden1"], h1.detach().numpy(), atol=1e-6)
        assert np.allclose(z["hidden2"], h2.detach().numpy(), atol=1e-6)


def test_a_run_with_features_writes_one_file_per_stacked_seed(fake_mnist, tmp_path):
    cfg = compose_config(f"data.root={fake_mnist}", "data.download=false", "model=fc400x3", "model.width=8",
                         "trainer.max_epochs=1", "diagnostics.features=true", "diagnostics.feature_examples=25",
                         "seeds=[0,1]", "trainer.progress=false")
    summaries = train(cfg, tmp_path)
    for seed, summary in zip((0, 1), summaries):
        assert summary["features"] == FEATURES
        with np.load(tmp_path / f"seed{seed}" / FEATURES) as z:
            assert z["hidden3"].shape == (25, 8)
    with np.load(tmp_path / "seed0" / FEATURES) as a, np.load(tmp_path / "seed1" / FEATURES) as b:
        assert (a["input"] == b["input"]).all() and not np.allclose(a["hidden1"], b["hidden1"])


def test_the_tsne_preset_end_to_end(tmp_path):
    cfg = compose_config("experiment=tsne")
    assert (cfg.model.name, cfg.model.activation, cfg.data.name) == ("fc400x3", "tanh", "mnist")
    assert cfg.diagnostics.features and cfg.diagnostics.feature_examples == 2000
    assert (cfg.optim.lr, cfg.trainer.max_epochs) == (1e-4, 300)   # the paper's protocol
    data = write_fake_mnist(tmp_path / "data", n_train=128, n_test=64)
    results = tmp_path / "results"
    run = run_cli("run", "experiment=tsne", "model.width=8",
                  "trainer.max_epochs=1", "diagnostics.feature_examples=50", f"data.root={data}",
                  "data.download=false", f"results_dir={results}", "trainer.progress=false")
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(p.parent.name.split("_")[-2] for p in results.rglob(FEATURES)) == ["bp", "dfa"]
    report.main([str(results), "--out", str(tmp_path / "out"), "--tsne-points", "30"])
    tsne = [p for p in (tmp_path / "out" / "figures").glob("*tsne*.png")]
    assert len(tsne) == 1 and tsne[0].read_bytes()[:8] == PNG_SIGNATURE
