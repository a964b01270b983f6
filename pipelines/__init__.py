"""rayml's example pipelines, on data sets that ship with scikit-learn (no downloads).

Every module of this package is imported by :meth:`rayml.pipeline.Registry.discover`, so a
module added here is registered without further configuration. Each module pairs a training
pipeline (which stores a new model version) with an inference pipeline (which predicts with the
newest version):

* :mod:`pipelines.breast_cancer` -- XGBoost binary classifier: ``breast_cancer.train``,
  ``breast_cancer.predict``.
* :mod:`pipelines.iris` -- scikit-learn random forest: ``iris.train``, ``iris.predict``.

Customers' own pipelines live in their own packages, exposed through the ``rayml.pipelines``
entry-point group or named in configuration; they do not need to touch this package.

Example:
    >>> from rayml.pipeline import Registry
    >>> sorted(Registry().discover(entry_points=False))[:2]
    ['breast_cancer.predict', 'breast_cancer.train']
"""
