"""The versioned model store and what serves from it.

* :mod:`~rayml.models.store` -- ``ModelStore``: atomic versions with metadata, on a local
  directory or any fsspec URL;
* :mod:`~rayml.models.formats` -- safe formats (XGBoost UBJ/JSON, scikit-learn via skops; no
  pickle unless allowed);
* :mod:`~rayml.models.layout` -- how versions are laid out and committed atomically;
* :mod:`~rayml.models.cache` -- the workers' LRU of loaded models;
* :mod:`~rayml.models.versions` -- which versions may be served or pinned, the newest one the
  store alone serves, the workers' pin verdicts; pure;
* :mod:`~rayml.models.promotion` -- serving records (the models topic's values), the promotion
  gate's rule, retention; pure.

Model names and version strings are wire formats: :mod:`rayml.protocol.model_names`.

May import: ``pipeline``, ``protocol``, ``config``, ``errors``; never ``ray`` or
``confluent_kafka``.
"""
