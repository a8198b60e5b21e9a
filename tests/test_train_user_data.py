"""Training on images (the built-in digits, a folder of PNGs) and on a user's (N, D) array."""

import io
import json

import numpy as np
import pytest
import torch
from cli_helpers import one_line_error
from PIL import Image

from fastgp.cli import main
from fastgp.train import TrainConfig, Trainer
from fastgp.train.run_folder import load_checkpoint

TINY = ["--steps", "4", "--eval-every", "2", "--no-progress", "--width", "8", "--batch-size", "16"]


@pytest.fixture(autouse=True)
def private_classifier_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FASTGP_CACHE", str(tmp_path_factory.getbasetemp() / "classifier-cache"))


def _evaluations(run_dir):
    lines = (run_dir / "evaluations.csv").read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]


def test_digits_run_reports_classes_and_frechet_distance_with_its_floor(tmp_path, capsys):
    assert main(["train", "--dataset", "digits", "--out", str(tmp_path), *TINY]) == 0
    out = capsys.readouterr().out
    assert "critic step: engine" in out and "real-vs-real" in out
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["architecture"], config["gp_weight"], config["noise_dim"]) == ("dcgan", 10.0, 128)
    assert config["lr"] == 1e-4  # the paper's image learning rate
    rows = _evaluations(tmp_path)
    assert [int(row["step"]) for row in rows] == [2, 4]
    for row in rows:
        assert 0 <= int(row["classes_present"]) <= 10
        assert float(row["frechet_distance"]) > float(row["frechet_floor"]) > 0
    final = json.loads((tmp_path / "final_metrics.json").read_text())
    assert final["classifier_accuracy"] >= 0.95 and final["frechet_samples"] == 898
    with Image.open(tmp_path / "samples.png") as grid:  # 64 images of 8×8, 8 per row
        assert grid.mode == "L" and grid.size[0] == grid.size[1] > 8 * 8 * 4
    assert load_checkpoint(tmp_path / "checkpoint.pt")["sample_shape"] == [1, 8, 8]
    report = (tmp_path / "report.md").read_text()
    assert f"| digit classes present | {final['classes_present']}/10 |" in report
    assert "Fréchet distance of classifier features" in report

    png, npy = tmp_path / "grid.png", tmp_path / "digits.npy"
    assert main(["sample", "--run", str(tmp_path), "--n", "10", "--out", str(png)]) == 0
    assert Image.open(png).size[0] > 0
    assert main(["sample", "--run", str(tmp_path), "--n", "10", "--out", str(npy)]) == 0
    images = np.load(npy)
    assert images.shape == (10, 1, 8, 8) and np.abs(images).max() <= 1


def test_image_folder_run_with_resizing(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(12):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    config = TrainConfig(dataset=str(folder), image_size=16, steps=2, eval_every=1, width=8,
                         batch_size=8, eval_samples=16)
    trainer = Trainer(config, tmp_path / "run", progress=False)
    assert trainer.sample_shape == (3, 16, 16) and trainer.config.architecture == "dcgan"
    trainer.run()
    with Image.open(tmp_path / "run" / "samples_step000001.png") as grid:
        assert grid.mode == "RGB"
    assert _evaluations(tmp_path / "run")[0]["penalty_share"] != ""


def test_vector_array_run_measures_emd_and_refuses_a_png_grid(tmp_path, capsys):
    data = np.random.default_rng(1).normal(size=(500, 3)).astype(np.float32)
    np.save(tmp_path / "points.npy", data)
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(tmp_path / "points.npy"), "--out", str(run),
                 "--steps", "3", "--eval-every", "2", "--hidden", "16", "--eval-samples", "200",
                 "--no-progress"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["noise_dim"], config["architecture"], config["gp_weight"]) == (3, "mlp", 10.0)
    row = _evaluations(run)[-1]
    assert float(row["emd"]) > float(row["emd_floor"]) > 0
    assert main(["sample", "--run", str(run), "--n", "7", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (7, 3)
    assert main(["sample", "--run", str(run), "--n", "7", "--out", str(tmp_path / "s.png")]) == 2
    assert "needs an image run" in capsys.readouterr().err


def test_bad_data_and_mismatched_architecture_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        Trainer(TrainConfig(dataset="cifar11"), tmp_path, progress=False)
    with pytest.raises(ValueError, match="does not fit image data"):
        Trainer(TrainConfig(dataset="digits", architecture="mlp"), tmp_path, progress=False)
    with pytest.raises(ValueError, match="does not fit toy data"):
        Trainer(TrainConfig(architecture="dcgan"), tmp_path, progress=False)
    with pytest.raises(ValueError, match="32×32"):
        Trainer(TrainConfig(dataset="digits", architecture="resnet"), tmp_path, progress=False)


def test_resnet_pair_trains_on_32_pixel_images(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    config = TrainConfig(dataset=str(tmp_path / "images.npy"), architecture="resnet", width=8,
                         steps=1, eval_every=5, batch_size=4, eval_samples=4, noise_dim=16)
    trainer = Trainer(config, tmp_path / "run", progress=False)
    assert trainer.objectives.engine is not None
    trainer.run()
    assert all(torch.isfinite(p).all() for p in trainer.critic.parameters())


def _truncated_npz(path):
    np.savez(path.with_name("whole.npz"), x=np.zeros((10, 2), dtype=np.float32))
    whole = path.with_name("whole.npz").read_bytes()
    path.write_bytes(whole[: len(whole) // 2])


def _absurd_npy(path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (10**7, 10**6)})
    path.write_bytes(header.getvalue() + bytes(16))


def _bomb_folder(path, monkeypatch):
    path.mkdir()
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 8)  # 25 pixels > 2 × 8: a "bomb"


def _bright_float_tiffs(path):
    path.mkdir()
    Image.fromarray(np.full((4, 4), 200.0, dtype=np.float32)).save(path / "bright.tif")


@pytest.mark.parametrize(
    "name, make, fragments",
    [
        ("broken.npz", lambda path, _: _truncated_npz(path), ["broken.npz", "not a zip file"]),
        ("absurd.npy", lambda path, _: _absurd_npy(path),
         ["absurd.npy", "header claims an array of shape (10000000, 1000000)"]),
        ("bombs", _bomb_folder, ["bomb.png", "could be decompression bomb"]),
        ("floats", lambda path, _: _bright_float_tiffs(path),
         ["bright.tif", "float pixels in [200, 200]", "must lie in [0, 1] or [-1, 1]"]),
    ],
)
def test_bad_data_file_is_one_line_naming_it(name, make, fragments, tmp_path, capsys, monkeypatch):
    make(tmp_path / name, monkeypatch)
    assert main(["train", "--dataset", str(tmp_path / name), "--out", str(tmp_path / "run"),
                 *TINY]) == 2
    one_line_error(capsys.readouterr().err, "train", *fragments)
    assert not (tmp_path / "run").exists()


def test_one_dimensional_array_trains_plots_a_histogram_and_samples(tmp_path, capsys):
    """(N, 1) data used to train the whole run and then crash drawing its scatter plot."""
    data = np.random.default_rng(2).normal(size=(300, 1)).astype(np.float32)
    np.save(tmp_path / "values.npy", data)
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(tmp_path / "values.npy"), "--out", str(run),
                 "--steps", "2", "--eval-every", "1", "--hidden", "8", "--eval-samples", "100",
                 "--no-progress"]) == 0
    assert float(_evaluations(run)[-1]["emd"]) > 0
    for figure in ("samples.png", "samples_step000001.png"):
        with Image.open(run / figure) as image:
            assert image.width > 100
    assert main(["sample", "--run", str(run), "--n", "5", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (5, 1)
