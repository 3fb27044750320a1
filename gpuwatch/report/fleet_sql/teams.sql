-- By team (across every cluster) and currency, from holder_hourly, where a GPU-hour
-- held by several pods is split between them: GPU-hours held, cost and idle cost in the
-- reported week and the week before. team is null on the unallocated rest.
SELECT
  h.team,
  h.currency,
  SUM(CASE WHEN h.week = p.week THEN h.share_ratio ELSE 0 END) AS gpu_hours,
  SUM(CASE WHEN h.week = p.week THEN h.cost END) AS cost,
  SUM(CASE WHEN h.week = p.week THEN h.idle_cost END) AS idle_cost,
  SUM(CASE WHEN h.week = p.previous_week THEN h.cost END) AS previous_cost,
  SUM(CASE WHEN h.week = p.previous_week THEN h.idle_cost END) AS previous_idle_cost
FROM holder_hourly AS h
CROSS JOIN fleet_period AS p
WHERE h.week IN (p.week, p.previous_week)
GROUP BY h.team, h.currency
ORDER BY h.team, h.currency
