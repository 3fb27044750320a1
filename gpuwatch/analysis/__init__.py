"""Pure analysis: attribution, rules, detectors. No I/O, no client libraries, no effects."""
