"""numpy round trips and bad inputs: scikit-learn-style errors, never a crash."""

import pickle

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from conftest import three_classes, two_classes, two_regimes
from mdem import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor, _core


@pytest.fixture(scope="module")
def regressor():
    X, y = two_regimes()
    return MixtureOfExpertsRegressor(random_state=0).fit(X, y), X, y


@pytest.fixture(scope="module")
def classifier():
    X, y = three_classes()
    labels = np.array(["low", "mid", "high"], dtype=object)[y]
    return MixtureOfExpertsClassifier(random_state=0).fit(X, labels), X, labels


def test_outputs_are_float64_arrays_of_the_right_shape(regressor, classifier):
    est, X, y = regressor
    pred = est.predict(X)
    assert pred.dtype == np.float64 and pred.shape == (len(X),)
    resp = est.responsibilities(X, y)
    assert resp.shape == (len(X), 2)
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-12)
    assert est.theta_.dtype == np.float64 and est.theta_.shape == (est.model_.n_params,)
    assert est.trajectory_.shape == (est.n_iter_,)
    assert est.n_features_in_ == 2
    clf, Xc, yc = classifier
    proba = clf.predict_proba(Xc)
    assert proba.shape == (len(Xc), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert list(clf.classes_) == ["high", "low", "mid"]
    assert set(clf.predict(Xc)) <= set(clf.classes_)


def test_dtypes_layouts_and_lists_give_the_same_fit():
    X, y = two_regimes(n=200)
    ref = MixtureOfExpertsRegressor(random_state=3).fit(X, y)
    wide = np.hstack([X, np.zeros_like(X)])
    variants = [
        np.asfortranarray(X),  # column-major
        wide[:, :2],  # a non-contiguous view
        X.tolist(),  # a list of lists
        X.astype(np.float32).astype(np.float64),  # the same values via float32
    ]
    for Xv in variants[:3]:
        est = MixtureOfExpertsRegressor(random_state=3).fit(Xv, y)
        np.testing.assert_array_equal(est.theta_, ref.theta_)
        np.testing.assert_array_equal(est.predict(Xv), ref.predict(X))
    # Strided y and a non-contiguous X at predict time.
    y_strided = np.repeat(y, 2)[::2]
    assert not y_strided.flags.c_contiguous
    est = MixtureOfExpertsRegressor(random_state=3).fit(X, y_strided)
    np.testing.assert_array_equal(est.theta_, ref.theta_)
    np.testing.assert_array_equal(ref.predict(wide[:, :2]), ref.predict(X))
    # float32 input is converted to float64 (same values as the converted array).
    f32 = MixtureOfExpertsRegressor(random_state=3).fit(X.astype(np.float32), y)
    np.testing.assert_array_equal(
        f32.theta_, MixtureOfExpertsRegressor(random_state=3).fit(variants[3], y).theta_
    )


def test_same_random_state_same_result_and_pickle_round_trip(regressor):
    est, X, y = regressor
    again = MixtureOfExpertsRegressor(random_state=0).fit(X, y)
    np.testing.assert_array_equal(again.theta_, est.theta_)
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.theta_, est.theta_)
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    np.testing.assert_array_equal(back.model_.theta, est.model_.theta)
    assert back.model_.log_likelihood == est.model_.log_likelihood
    np.testing.assert_array_equal(back.model_.trajectory, est.model_.trajectory)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_value_errors(bad):
    X, y = two_regimes(n=100)
    Xb = X.copy()
    Xb[5, 1] = bad
    with pytest.raises(ValueError, match="Input X contains"):
        MixtureOfExpertsRegressor().fit(Xb, y)
    yb = y.copy()
    yb[3] = bad
    with pytest.raises(ValueError, match="Input y contains"):
        MixtureOfExpertsRegressor().fit(X, yb)
    est = MixtureOfExpertsRegressor(random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="Input X contains"):
        est.predict(Xb)


def test_wrong_shapes_are_value_errors(regressor):
    est, X, y = regressor
    with pytest.raises(ValueError, match="X has 3 features, but MixtureOfExpertsRegressor is expecting 2"):
        est.predict(np.ones((4, 3)))
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        est.predict(X[:, 0])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        MixtureOfExpertsRegressor().fit(X, y[:-1])
    with pytest.raises(ValueError, match="X has 300 samples but y has 299"):
        est.responsibilities(X, y[:-1])
    with pytest.raises(ValueError, match="1 sample"):
        MixtureOfExpertsRegressor().fit(X[:1], y[:1])
    with pytest.raises(ValueError, match="samples but the model has 14 parameters"):
        MixtureOfExpertsRegressor().fit(np.random.default_rng(0).normal(size=(10, 3)), np.arange(10.0))


def test_object_and_complex_arrays_are_value_errors():
    X, y = two_regimes(n=100)
    Xo = X.astype(object)
    Xo[0, 0] = "argh"
    with pytest.raises(ValueError, match="could not convert string to float"):
        MixtureOfExpertsRegressor().fit(Xo, y)
    # Numbers held in an object array are accepted (converted, as scikit-learn does).
    est = MixtureOfExpertsRegressor(random_state=0).fit(X.astype(object), y)
    np.testing.assert_array_equal(
        est.theta_, MixtureOfExpertsRegressor(random_state=0).fit(X, y).theta_
    )
    with pytest.raises(ValueError, match="Complex data not supported"):
        MixtureOfExpertsRegressor().fit(X + 1j, y)
    with pytest.raises(ValueError, match="Unknown label type"):
        MixtureOfExpertsClassifier().fit(X, y)  # a continuous target


def test_the_native_module_rejects_what_the_estimators_convert():
    X, y = two_regimes(n=100)
    kw = dict(expert="linear", n_experts=2)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.fit(np.asfortranarray(X), y, **kw)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.fit(X, np.repeat(y, 2)[::2], **kw)
    with pytest.raises(TypeError):
        _core.fit(X.astype(np.float32), y, **kw)
    with pytest.raises(TypeError):
        _core.fit(X.astype(object), y, **kw)
    Xn = X.copy()
    Xn[7, 0] = np.nan
    with pytest.raises(ValueError, match="row Some\\(7\\).*NaN or infinite"):
        _core.fit(Xn, y, **kw)
    with pytest.raises(ValueError, match="X has 100 rows but y has 99"):
        _core.fit(X, y[:-1], **kw)
    with pytest.raises(ValueError, match="no expert named `gamma`"):
        _core.fit(X, y, expert="gamma", n_experts=2)
    with pytest.raises(ValueError, match="logistic experts expect"):
        _core.fit(X, y, expert="logistic", n_experts=2)
    with pytest.raises(ValueError, match="invalid value 'bfgs' for solver"):
        _core.fit(X, y, solver="bfgs", **kw)
    with pytest.raises(ValueError, match="invalid value 'bogus' for init"):
        _core.fit(X, y, init="bogus", **kw)
    with pytest.raises(ValueError, match="missing field `format`"):
        _core.fit_from_json("{}")


def test_unseen_labels_are_value_errors(classifier):
    clf, X, y = classifier
    y_bad = y.copy()
    y_bad[0] = "unknown"
    with pytest.raises(ValueError, match=r"y contains previously unseen labels: \['unknown'\]"):
        clf.score(X, y_bad)
    with pytest.raises(ValueError, match="previously unseen labels"):
        clf.responsibilities(X, y_bad)
    assert 0.0 <= clf.score(X, y) <= 1.0


def test_bad_settings_are_errors_at_fit_not_at_construction():
    X, y = two_regimes(n=100)
    cases = [
        (dict(n_experts=0), ValueError, "n_experts"),
        (dict(n_experts=2.5), TypeError, "n_experts must be an int"),
        (dict(expert="logistic"), ValueError, "expert"),
        (dict(solver="adam"), ValueError, "solver"),
        (dict(eta=0.5), ValueError, "eta=0.5 applies to solver='md' only"),
        (dict(solver="md", eta=-1.0), ValueError, "eta"),
        (dict(tol=0.0), ValueError, "tol"),
        (dict(max_iter=0), ValueError, "max_iter"),
        (dict(gating="yes"), TypeError, "gating must be a bool"),
        (dict(init="kmeans++"), ValueError, "init"),
        (dict(random_state=-1), ValueError, "random_state"),
    ]
    for params, err, msg in cases:
        est = MixtureOfExpertsRegressor(**params)  # constructing never raises
        with pytest.raises(err, match=msg):
            est.fit(X, y)
    with pytest.raises(NotFittedError):
        MixtureOfExpertsRegressor().predict(X)
    with pytest.raises(ValueError, match="needs exactly 2 classes"):
        MixtureOfExpertsClassifier(expert="logistic").fit(*three_classes(n=100))
    Xc, yc = two_classes(n=100)
    with pytest.raises(ValueError, match="only one class"):
        MixtureOfExpertsClassifier().fit(Xc, np.zeros(100))
