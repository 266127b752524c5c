"""syncd's connector contract suite, a pytest plugin any connector can run.

Shipped by the sandbox distribution (the extra ``syncd[sandbox]``: ``pip install ./sandbox``
in a checkout), never by the production wheel. A connector joins the suite
by registering, besides its factory under
``syncd.connectors.v1``, a *contract world* under ``syncd.contract.v1`` with the same name:
a callable returning a fresh, unstarted :class:`~syncd.contract.harness.ContractWorld` (an
emulator of its CRM, or an in-memory CRM) that the suite seeds and inspects directly::

    [project.entry-points."syncd.contract.v1"]
    mycrm = "syncd_mycrm.emulator.contract:world"

Then, from anywhere::

    pytest --pyargs syncd.contract --syncd-connector mycrm

The plugin (:mod:`syncd.contract.plugin`, registered under ``pytest11``) builds the connector
only through its entry point, so the suite never imports it. ``connectors/README.md`` is the
guide.
"""
