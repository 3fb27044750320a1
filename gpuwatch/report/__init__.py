"""Files a cycle leaves behind: the cycle JSON now, the weekly Parquet and HTML later."""
