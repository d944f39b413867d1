"""Access rules: CIDR allow and deny lists (:mod:`.access`)."""
