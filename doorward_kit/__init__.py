"""The shared kit: settings, errors, logging, telemetry, DB, gRPC, HTTP, auth and policy.

It never imports a service, the gateway or deploy: dependencies point one way.
"""
