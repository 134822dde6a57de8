"""mdem: mixtures of experts fitted by EM, seen as mirror descent.

scikit-learn estimators over the Rust library (``mdem._core``):

* :class:`MixtureOfExpertsRegressor` -- linear-Gaussian or Poisson experts; ``predict``
  is the mixture mean.
* :class:`MixtureOfExpertsClassifier` -- logistic or multinomial experts;
  ``predict_proba`` and ``classes_`` for arbitrary labels.
* :class:`GaussianMixture` -- a Gaussian mixture of the rows (scikit-learn's
  ``GaussianMixture`` conventions): ``predict``, ``predict_proba``, ``score_samples``,
  ``weights_``, ``means_``, ``covariances_``.

A fit runs the same code path as ``mdem fit`` on the command line (an intercept column,
standardised columns, seeded restarts, parameters mapped back to the data's units), with
the GIL released. Extras: :meth:`~MixtureOfExpertsRegressor.certificate` (the convergence
certificate of EM as a dict), :meth:`~MixtureOfExpertsRegressor.responsibilities`,
``trajectory_`` (log-likelihood per iteration) and
:meth:`~MixtureOfExpertsRegressor.em_md_gap` (one EM step against one mirror-descent step).

:func:`mdem.dask.fit` fits either estimator to rows held by Dask (``import mdem.dask``;
needs ``dask`` and, for a cluster, ``distributed``): exact EM over the partitions, one
Dask round per E-step and per Newton round of the M-step, from a fit on a sample.
"""

from mdem._estimators import (
    GaussianMixture,
    MixtureOfExpertsClassifier,
    MixtureOfExpertsRegressor,
)
from mdem import _core

__version__ = _core.__version__

__all__ = [
    "GaussianMixture",
    "MixtureOfExpertsClassifier",
    "MixtureOfExpertsRegressor",
    "__version__",
]
