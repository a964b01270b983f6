"""Tenants: who may send what, and where rayml may write for them (docs/security.md).

A tenant is a set of topics that Kafka's ACLs guard: its request topics (inference, training),
its result topic and its reply prefix. rayml takes a request's tenant from the topic the request
came from -- a topic only that tenant's principal may write -- never from a field of the message.

* :mod:`rayml.tenancy.rules` (pure): the tenants of the settings (one default tenant when none
  are configured), which topic belongs to which, rayml's own topics, and the checks a request
  must pass (its ``reply_to``, its pipeline, training).
* :mod:`rayml.tenancy.acls`: the Kafka ACLs of each tenant's principal and the executor's
  (``rayml tenants apply``), and the executor's start check of its own rights.
"""
