"""salesforce connector (placeholder until it lands)."""
