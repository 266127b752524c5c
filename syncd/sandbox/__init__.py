"""Simulators of the outside world on loopback: the Berkshire API and CRM emulators.

They are real HTTP servers, so the real clients (httpx, simple-salesforce,
hubspot-api-client) are exercised end to end. They count requests server-side, so every
figure syncd reports about CRM traffic is measured, not self-reported.
"""
