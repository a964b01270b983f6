"""Tenants: who may send what, and where rayml may write for them (docs/security.md).

A tenant is a set of topics that Kafka's ACLs guard: its request topics (inference, training),
its result topic and its reply prefix. rayml takes a request's tenant from the topic the request
came from -- a topic only that tenant's principal may write -- never from a field of the message.

* :mod:`rayml.tenancy.rules` (pure): the tenants of the settings (one default tenant when none
  are configured), which topic belongs to which, rayml's own topics, and the checks a request
  must pass (its ``reply_to``, its pipeline, training).
* :mod:`rayml.tenancy.grants`: the ACL plan, which Kafka rights each tenant's principal and
  the executor's need (no broker).
* :mod:`rayml.tenancy.acls`: those ACLs on the broker: ``rayml tenants apply`` creates the
  topics and the missing bindings, ``rayml tenants list`` shows which the broker holds.
* :mod:`rayml.tenancy.access_check`: the executor's start check of its own rights
  (``rayml serve``).
"""
