"""`vla-rl plot`: metrics CSV in, PNG out, through the real command line."""

import matplotlib.image
import numpy as np

from vla_rl_ros import cli
from vla_rl_ros.rl import MetricsWriter, read_metrics
from vla_rl_ros.rl.plot import eval_rounds


def test_an_evaluation_round_split_across_updates_is_one_point():
    rows = [{"update": "5", "eval/episodes": "2", "eval/success_rate": "0.0", "eval/policy_version": "5.0"},
            {"update": "6", "eval/episodes": "18", "eval/success_rate": "0.5", "eval/policy_version": "5.0"},
            {"update": "7", "eval/episodes": ""},
            {"update": "10", "eval/episodes": "20", "eval/success_rate": "0.75", "eval/policy_version": "10.0"},
            {"update": "11", "eval/episodes": "10", "eval/success_rate": "1.0"}]  # no version: kept apart
    assert eval_rounds(rows) == [(6.0, 0.45, 20.0), (10.0, 0.75, 20.0), (11.0, 1.0, 10.0)]


def test_metrics_csv_widens_when_a_new_metric_appears(tmp_path):
    writer = MetricsWriter(tmp_path, tensorboard=False)
    writer.log(1, {"loss/policy": -0.1})
    writer.log(2, {"loss/policy": -0.2, "eval/success_rate": 0.5})
    MetricsWriter(tmp_path, tensorboard=False).log(3, {"loss/policy": -0.3})  # reopened after a restart
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [(r["update"], r["loss/policy"], r["eval/success_rate"]) for r in rows] == [
        ("1", "-0.1", ""), ("2", "-0.2", "0.5"), ("3", "-0.3", "")]


def test_plot_command_writes_a_png(tmp_path, capsys):
    writer = MetricsWriter(tmp_path, tensorboard=False)
    rng = np.random.default_rng(0)
    for update in range(1, 21):
        row = {"rollout/success_rate": 0.2 + 0.02 * update, "grpo/kept_group_fraction": rng.uniform(0.3, 0.5),
               "grpo/clip_fraction": rng.uniform(0, 0.05), "loss/policy": -0.01}
        if update % 5 == 0:
            row |= {"eval/success_rate": 0.1 + 0.03 * update, "eval/episodes": 50, "eval/policy_version": update}
        writer.log(update, row)
    assert cli.main(["plot", str(tmp_path)]) == 0
    image = matplotlib.image.imread(tmp_path / "plot.png")
    assert image.shape[:2] == (700, 800) and image.std() > 0.05  # drawn, not blank
    assert capsys.readouterr().out.strip() == str(tmp_path / "plot.png")


def test_plot_command_explains_a_missing_metrics_file(tmp_path, capsys):
    assert cli.main(["plot", str(tmp_path)]) == 1
    assert "metrics.csv not found" in capsys.readouterr().err
