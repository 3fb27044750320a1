"""Actions on the cluster: planners that decide under safety guards (pure), and the
actuators that carry decisions out (dry-run by default)."""
