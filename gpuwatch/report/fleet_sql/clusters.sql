-- By cluster and currency: GPUs, GPU-hours, cost and idle cost in the reported week and
-- the week before. A cluster that reported only the week before has a row with
-- gpu_hours = 0 (see not_reported.sql).
SELECT
  g.cluster,
  g.currency,
  COUNT(DISTINCT CASE WHEN g.week = p.week THEN g.device_id END) AS gpus,
  SUM(CASE WHEN g.week = p.week THEN 1 ELSE 0 END) AS gpu_hours,
  SUM(CASE WHEN g.week = p.week THEN g.cost END) AS cost,
  SUM(CASE WHEN g.week = p.week THEN g.idle_cost END) AS idle_cost,
  AVG(CASE WHEN g.week = p.week THEN g.util_mean_ratio END) AS util_mean_ratio,
  SUM(CASE WHEN g.week = p.previous_week THEN 1 ELSE 0 END) AS previous_gpu_hours,
  SUM(CASE WHEN g.week = p.previous_week THEN g.cost END) AS previous_cost,
  SUM(CASE WHEN g.week = p.previous_week THEN g.idle_cost END) AS previous_idle_cost
FROM gpu_hourly AS g
CROSS JOIN fleet_period AS p
WHERE g.week IN (p.week, p.previous_week)
GROUP BY g.cluster, g.currency
ORDER BY g.cluster, g.currency
