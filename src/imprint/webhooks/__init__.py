"""Webhooks: events told to receivers over HTTPS, and the provisioning hook.

- :mod:`~imprint.webhooks.model`: subscriptions, delivery attempts, provisioning hooks,
  the event types and the URL rule;
- :mod:`~imprint.webhooks.signing`: the signature headers and how to check them;
- :mod:`~imprint.webhooks.events`: writes an event's deliveries to the outbox, in the
  transaction of the change that caused it;
- :mod:`~imprint.webhooks.delivery`: the outbox handler that posts one delivery and
  records each attempt in the delivery log;
- :mod:`~imprint.webhooks.expiry`: the periodic search for certificates crossing an
  expiry threshold;
- :mod:`~imprint.webhooks.hook`: the provisioning hook's HTTP client, the policy check
  the provisioning use case consults before anything is signed.

See docs/webhooks.md and decision 0012.
"""
