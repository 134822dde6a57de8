"""scikit-learn's own estimator checks on both estimators.

Every check of ``parametrize_with_checks`` runs. The ones listed in ``EXPECTED_FAILED``
are marked as expected failures (sklearn's ``expected_failed_checks`` mechanism), each
with its reason; the same list is in docs/09-python.md.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from mdem import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor

#: Checks that cannot pass, with the reason (keyed by estimator class name).
EXPECTED_FAILED = {
    "MixtureOfExpertsRegressor": {},
    "MixtureOfExpertsClassifier": {},
}


def expected_failed_checks(estimator):
    """The checks ``estimator`` is expected to fail, with their reasons."""
    return EXPECTED_FAILED[type(estimator).__name__]


@parametrize_with_checks(
    [
        MixtureOfExpertsRegressor(max_iter=200, random_state=0),
        MixtureOfExpertsClassifier(max_iter=200, random_state=0),
    ],
    expected_failed_checks=expected_failed_checks,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
