"""hubspot connector (placeholder until it lands)."""
