"""The wire: what travels on rayml's topics, as pydantic models and plain functions.

* :mod:`~rayml.protocol.envelopes` -- request and result envelopes, strict decoding;
* :mod:`~rayml.protocol.fields` -- the envelope's field types;
* :mod:`~rayml.protocol.dead_letters` -- dead letters and their headers;
* :mod:`~rayml.protocol.training` -- job events and model announcements;
* :mod:`~rayml.protocol.sweeps` -- hyperparameter sweeps in a training request;
* :mod:`~rayml.protocol.model_names` -- model names and version strings;
* :mod:`~rayml.protocol.schemas` -- the published JSON Schemas (``python -m
  rayml.protocol.schemas``).

Pure: pydantic only. May import ``config`` and ``errors``; never ``ray`` or ``confluent_kafka``.
"""
