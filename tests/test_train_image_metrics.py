"""Image metrics: Fréchet distance against closed forms, the cached digits classifier, class coverage."""

import numpy as np
import pytest
import scipy.linalg
import torch

from fastgp.train import image_metrics
from fastgp.train.image_data import digits as load_digits
from fastgp.train.image_metrics import (
    CACHE_FILE,
    class_coverage,
    default_cache_dir,
    digits_classifier,
    digits_quality,
    frechet_distance,
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fastgp_cache")


@pytest.fixture(scope="module")
def classifier(cache_dir):
    return digits_classifier(cache_dir)


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return data.images, data.labels


def _exact_moments(mean, std, n=16):
    """n samples whose sample mean is exactly ``mean`` and unbiased sample covariance exactly
    ``diag(std²)``: the non-constant columns of a Hadamard matrix are ±1, zero-mean and orthogonal."""
    columns = scipy.linalg.hadamard(n)[:, 1:len(mean) + 1] * np.sqrt((n - 1) / n)
    return np.asarray(mean) + columns * np.asarray(std)


def _frechet_by_sqrtm(features_a, features_b):
    mean_a, mean_b = features_a.mean(0), features_b.mean(0)
    cov_a, cov_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    cross = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return ((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * cross)


def _correlated(rng, n, dim, shift=0.0):
    return rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim)) + shift


def test_frechet_distance_of_a_set_with_itself_is_zero():
    features = _correlated(np.random.default_rng(0), 400, 32, shift=3.0)
    assert np.trace(np.cov(features, rowvar=False)) > 10
    assert frechet_distance(features, features) <= 1e-8


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    mean_1, std_1 = [0.5, -1.0, 2.0, 0.0, 3.0], [1.0, 0.5, 2.0, 0.1, 1.5]
    mean_2, std_2 = [1.5, -1.0, 0.0, 0.3, 3.0], [0.2, 0.5, 3.0, 1.1, 0.5]
    features_1, features_2 = _exact_moments(mean_1, std_1), _exact_moments(mean_2, std_2)
    np.testing.assert_allclose(np.cov(features_1, rowvar=False), np.diag(np.square(std_1)), atol=1e-12)
    expected = (np.subtract(mean_1, mean_2) ** 2).sum() + (np.subtract(std_1, std_2) ** 2).sum()
    assert frechet_distance(features_1, features_2) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_sqrtm_form_for_full_covariances():
    rng = np.random.default_rng(1)
    features_a, features_b = _correlated(rng, 300, 12), _correlated(rng, 200, 12, shift=0.7)
    expected = _frechet_by_sqrtm(features_a, features_b)
    assert expected > 1
    assert frechet_distance(features_a, features_b) == pytest.approx(expected, rel=1e-9)
    as_tensors = frechet_distance(torch.from_numpy(features_a).float(), torch.from_numpy(features_b))
    assert as_tensors == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("samples", "tolerance"), [(300, 1e-10), (20, 1e-7)], ids=["full-rank", "singular"])
def test_frechet_distance_is_symmetric(samples, tolerance):
    # With 20 samples of 64 features both covariances are singular: the symmetric form must
    # still give a real, non-negative and symmetric distance. Its tolerance is looser because
    # rounding leaves the zero eigenvalues at ~1e-16·λmax, whose square roots are ~1e-8·√λmax.
    rng = np.random.default_rng(2)
    features_a, features_b = _correlated(rng, samples, 64), _correlated(rng, samples + 7, 64, shift=0.2)
    forward, backward = frechet_distance(features_a, features_b), frechet_distance(features_b, features_a)
    assert forward > 0
    assert forward == pytest.approx(backward, rel=tolerance)


@pytest.mark.parametrize(
    ("features_a", "features_b", "message"),
    [
        (np.zeros((10, 4)), np.zeros((10, 5)), "feature dimensions differ"),
        (np.zeros((1, 4)), np.zeros((10, 4)), "at least 2 samples"),
        (np.zeros((10, 4)), np.zeros(10), r"shape \(N, F\)"),
        (np.zeros((10, 4)), np.full((10, 4), np.nan), "NaN"),
    ],
)
def test_frechet_distance_rejects_bad_input(features_a, features_b, message):
    with pytest.raises(ValueError, match=message):
        frechet_distance(features_a, features_b)


def test_classifier_is_accurate_on_the_held_out_split(classifier, digits):
    images, labels = digits
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert images.min() == -1 and images.max() == 1
    _, test = image_metrics._split_indices(labels)
    predicted = classifier.predict(images[test])
    assert predicted.dtype == torch.int64 and predicted.shape == (len(test),)
    assert classifier.accuracy == pytest.approx(float((predicted == labels[test]).double().mean()))
    assert classifier.accuracy >= 0.95
    features = classifier.features(images[:5])
    assert features.dtype == np.float64 and features.shape == (5, image_metrics.FEATURES)


def test_classifier_rejects_bad_images(classifier):
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        classifier.predict(torch.zeros(3, 64))
    with pytest.raises(ValueError, match="NaN"):
        classifier.features(torch.full((3, 1, 8, 8), float("nan")))


def test_second_call_loads_the_cache(classifier, cache_dir, digits):
    path = cache_dir / CACHE_FILE
    assert not classifier.from_cache and path.is_file()
    written = path.stat().st_mtime_ns
    again = digits_classifier(cache_dir)
    assert again.from_cache and path.stat().st_mtime_ns == written
    assert again.accuracy == classifier.accuracy
    images = digits[0][:200]
    assert torch.equal(again.predict(images), classifier.predict(images))
    np.testing.assert_array_equal(again.features(images), classifier.features(images))


@pytest.fixture
def counted_training(monkeypatch, classifier):
    """Replace training by a counter that hands back the already trained network."""
    calls = []

    def train(images, labels):
        calls.append(images.shape[0])
        return classifier.network

    monkeypatch.setattr(image_metrics, "_train_network", train)
    return calls


@pytest.mark.parametrize(
    "content",
    [lambda path: path.write_bytes(b"not a torch file"),
     lambda path: torch.save({"format": image_metrics.CACHE_FORMAT - 1, "weights": {}}, path),
     lambda path: torch.save({"format": image_metrics.CACHE_FORMAT, "weights": {"x": torch.ones(1)},
                              "accuracy": 1.0}, path)],
    ids=["corrupt", "old-format", "wrong-weights"],
)
def test_unusable_cache_is_retrained_with_a_warning(tmp_path, counted_training, classifier, content):
    content(tmp_path / CACHE_FILE)
    with pytest.warns(UserWarning, match="unusable"):
        retrained = digits_classifier(tmp_path)
    assert counted_training == [1347] and not retrained.from_cache
    assert retrained.accuracy == pytest.approx(classifier.accuracy)
    assert digits_classifier(tmp_path).from_cache and counted_training == [1347]


def test_unwritable_cache_only_warns(tmp_path, counted_training, classifier):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="cannot write"):
        trained = digits_classifier(blocker / "cache")
    assert counted_training == [1347] and trained.accuracy == pytest.approx(classifier.accuracy)


def test_training_is_deterministic_and_leaves_the_global_rng_alone(digits, monkeypatch):
    monkeypatch.setattr(image_metrics, "EPOCHS", 2)
    images, labels = digits[0][:128], digits[1][:128]
    before = torch.get_rng_state()
    first = image_metrics._train_network(images, labels)
    assert torch.equal(torch.get_rng_state(), before)
    second = image_metrics._train_network(images, labels)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FASTGP_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.setenv("FASTGP_CACHE", "")
    assert default_cache_dir() == tmp_path / "xdg" / "fastgp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "fastgp"


def test_class_coverage_on_hand_built_labels():
    coverage = class_coverage(torch.tensor([0] * 5 + [1] * 3 + [2] + [3]), num_classes=5)
    assert coverage.shares == pytest.approx([0.5, 0.3, 0.1, 0.1, 0.0])
    assert coverage.classes_present == 4
    assert (coverage.min_share, coverage.max_share) == (0.0, 0.5)
    assert coverage.as_dict() == {
        "class_shares": coverage.shares, "classes_present": 4, "num_classes": 5,
        "min_class_share": 0.0, "max_class_share": 0.5,
    }
    # One stray sample in 100 is 10% of a class's fair share: below the 20% needed to count.
    stray = class_coverage(torch.tensor([7] * 99 + [2]))
    assert stray.classes_present == 1 and stray.shares[2] == 0.01


@pytest.mark.parametrize(
    ("labels", "message"),
    [(torch.tensor([0, 10]), r"\[0, 10\)"), (torch.tensor([-1, 0]), r"\[0, 10\)"),
     (torch.tensor([0.0, 1.0]), "integers"), (torch.zeros(0, dtype=torch.int64), "N >= 1")],
)
def test_class_coverage_rejects_bad_labels(labels, message):
    with pytest.raises(ValueError, match=message):
        class_coverage(labels)


def test_digits_quality_reads_real_digits_near_the_floor_and_noise_far_above(classifier, digits):
    images, labels = digits
    real, held_out = images[:1200], images[1200:]
    noise = torch.rand(held_out.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    good = digits_quality(held_out, classifier, real=real)
    bad = digits_quality(noise, classifier, real=real)
    assert good["frechet_floor"] == bad["frechet_floor"] > 0
    assert good["frechet_floor_samples"] == good["frechet_samples"] == 597
    assert good["frechet_reference_samples"] == 600
    assert good["frechet_distance"] < 2 * good["frechet_floor"]
    assert bad["frechet_distance"] > 20 * bad["frechet_floor"]
    assert good["classes_present"] == 10 and good["min_class_share"] > 0.05
    assert good["classifier_accuracy"] == classifier.accuracy


def test_digits_quality_sees_a_collapsed_generator(classifier, digits):
    images, labels = digits
    threes = images[labels == 3]
    quality = digits_quality(threes, classifier)
    assert quality["classes_present"] == 1 and quality["max_class_share"] > 0.95
    assert quality["frechet_floor_samples"] == threes.shape[0]
    assert quality["frechet_distance"] > 10 * quality["frechet_floor"]
