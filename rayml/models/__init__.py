"""The versioned model store and what serves from it.

* :mod:`~rayml.models.store` -- ``ModelStore``: atomic versions with metadata, on a local
  directory or any fsspec URL;
* :mod:`~rayml.models.formats` -- safe formats (XGBoost UBJ/JSON, scikit-learn via skops; no
  pickle unless allowed);
* :mod:`~rayml.models.layout` -- how versions are laid out and committed atomically;
* :mod:`~rayml.models.cache` -- the workers' LRU of loaded models;
* :mod:`~rayml.models.versions` -- newest servable version, sweep trials, pinned versions; pure.

Model names and version strings are wire formats: :mod:`rayml.protocol.model_names`.

May import: ``pipeline``, ``protocol``, ``config``, ``errors``; never ``ray`` or
``confluent_kafka``.
"""
