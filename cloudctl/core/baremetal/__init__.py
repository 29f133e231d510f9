"""Bare metal (what HaaS/HIL does): nodes isolated into projects by switch VLANs.

The service is `service.Baremetal`; this package's own module imports nothing, so that what start-up
needs of it (`secrets.BmSecrets`, the HIL API's errors and callers) does not load the rest: the
service is built at its first use or when the state holds its rows (core/cloud.py, issue 14)."""
