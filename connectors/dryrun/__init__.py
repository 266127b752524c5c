"""dryrun connector (placeholder until it lands)."""
