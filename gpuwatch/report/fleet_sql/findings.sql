-- By cluster, team, pool, rule and severity: findings (unbroken runs of hours in which
-- a rule fired for a GPU) and their hours in the reported week, and findings the week
-- before. The page adds these up by cluster, by team and by pool.
SELECT
  f.cluster,
  f.team,
  f.pool,
  f.rule,
  f.severity,
  SUM(CASE WHEN f.week = p.week THEN 1 ELSE 0 END) AS findings,
  SUM(CASE WHEN f.week = p.week THEN f.hours ELSE 0 END) AS hours,
  SUM(CASE WHEN f.week = p.previous_week THEN 1 ELSE 0 END) AS previous_findings
FROM findings AS f
CROSS JOIN fleet_period AS p
WHERE f.week IN (p.week, p.previous_week)
GROUP BY f.cluster, f.team, f.pool, f.rule, f.severity
ORDER BY f.cluster, f.team, f.pool, f.rule, f.severity
