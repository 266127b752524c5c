"""CRM connectors for syncd. Each subpackage registers a factory under the entry-point group
``syncd.connectors.v1``; syncd finds them there and never imports one by name."""
