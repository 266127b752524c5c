"""A toy third connector: an in-memory CRM (``service``), a connector to it that imports only
``syncd.plugin`` (``connector``), and its contract world (``world``). Registered through
entry points by ``tests/contract/test_toy_connector.py``, it passes syncd's contract suite."""
