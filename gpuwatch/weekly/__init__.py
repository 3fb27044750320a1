"""The weekly report: a period's history turned into its tables."""
