-- By lever kind and currency, over every cluster's plan at the end of the reported
-- week: how many, their net (cash), their gross, and the gross of the blocked ones.
SELECT
  s.kind,
  s.currency,
  COUNT(*) AS levers,
  SUM(s.net_monthly) AS net_monthly,
  SUM(s.monthly) AS gross_monthly,
  SUM(CASE WHEN s.blocked IS NOT NULL THEN s.monthly END) AS blocked_monthly
FROM savings AS s
CROSS JOIN fleet_period AS p
WHERE s.week = p.week
GROUP BY s.kind, s.currency
ORDER BY s.kind, s.currency
