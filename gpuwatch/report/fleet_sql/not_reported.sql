-- Clusters that did not report: present in an earlier ISO week, absent from the
-- reported one; with the last week each reported. Reads the partition columns only.
SELECT
  g.cluster,
  MAX(g.week) AS last_week
FROM gpu_hourly AS g
CROSS JOIN fleet_period AS p
WHERE g.week < p.week
  AND g.week LIKE '____-W__'
  AND NOT EXISTS (
    SELECT 1
    FROM gpu_hourly AS h
    WHERE h.cluster = g.cluster AND h.week = p.week
  )
GROUP BY g.cluster
ORDER BY g.cluster
