-- By cluster and currency: each cluster's savings plan at the end of the reported week
-- (and the net of the week before). net_monthly is the cash the plan banks;
-- reclaimed_monthly is capacity freed with no bill changing, never added to it;
-- blocked_monthly is the gross of the levers that cannot be taken now.
SELECT
  s.cluster,
  s.currency,
  SUM(CASE WHEN s.week = p.week THEN 1 ELSE 0 END) AS levers,
  SUM(CASE WHEN s.week = p.week THEN s.net_monthly END) AS net_monthly,
  SUM(CASE WHEN s.week = p.week THEN s.reclaimed_monthly END) AS reclaimed_monthly,
  SUM(CASE WHEN s.week = p.week THEN s.reclaimed_gpu_hours_monthly END)
    AS reclaimed_gpu_hours_monthly,
  SUM(CASE WHEN s.week = p.week AND s.blocked IS NOT NULL THEN s.monthly END)
    AS blocked_monthly,
  SUM(CASE WHEN s.week = p.previous_week THEN s.net_monthly END) AS previous_net_monthly
FROM savings AS s
CROSS JOIN fleet_period AS p
WHERE s.week IN (p.week, p.previous_week)
GROUP BY s.cluster, s.currency
ORDER BY s.cluster, s.currency
