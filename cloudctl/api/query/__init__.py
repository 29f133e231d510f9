"""The AWS query protocol and the services that speak it on the Query endpoint."""
