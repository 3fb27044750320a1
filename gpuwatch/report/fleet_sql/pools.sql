-- By node pool (its name, across every cluster) and currency: GPU-hours, cost and idle
-- cost in the reported week and the week before.
SELECT
  g.pool,
  g.currency,
  SUM(CASE WHEN g.week = p.week THEN 1 ELSE 0 END) AS gpu_hours,
  SUM(CASE WHEN g.week = p.week THEN g.cost END) AS cost,
  SUM(CASE WHEN g.week = p.week THEN g.idle_cost END) AS idle_cost,
  SUM(CASE WHEN g.week = p.previous_week THEN g.cost END) AS previous_cost,
  SUM(CASE WHEN g.week = p.previous_week THEN g.idle_cost END) AS previous_idle_cost
FROM gpu_hourly AS g
CROSS JOIN fleet_period AS p
WHERE g.week IN (p.week, p.previous_week)
GROUP BY g.pool, g.currency
ORDER BY g.pool, g.currency
