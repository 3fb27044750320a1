-- By the scope of each lever of each cluster's plan at the end of the reported week
-- (its team and pool) and currency: what the plans bank per 30 days, and the week
-- before. team is null for a pool's or the fleet's levers (removing nodes, reserving
-- capacity), pool for the fleet's (reserving capacity). The page adds these rows up by
-- team and by pool.
SELECT
  s.team,
  s.pool,
  s.currency,
  SUM(CASE WHEN s.week = p.week THEN 1 ELSE 0 END) AS levers,
  SUM(CASE WHEN s.week = p.week THEN s.net_monthly END) AS net_monthly,
  SUM(CASE WHEN s.week = p.previous_week THEN s.net_monthly END) AS previous_net_monthly
FROM savings AS s
CROSS JOIN fleet_period AS p
WHERE s.week IN (p.week, p.previous_week)
GROUP BY s.team, s.pool, s.currency
ORDER BY s.team, s.pool, s.currency
