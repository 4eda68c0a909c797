-- From candidate findings to findings: the checks every rule shares, in one place.
-- Inputs: tw_candidates, tw_job_metrics, tw_rules(rule, severity, enabled, min_runtime_s),
-- tw_exempt(rule, kind, value) (rule NULL: every rule), tw_suppress(rule, by_rule).

-- name: findings
CREATE OR REPLACE TEMP TABLE tw_findings AS
WITH kept AS (
    SELECT c.*, r.severity, j.user_name, j.cluster, j.job_id, j.job_name, j.account, j.in_period
    FROM tw_candidates c
    JOIN tw_rules r USING (rule)
    JOIN tw_job_metrics j USING (job_key)
    WHERE r.enabled
      AND coalesce(j.elapsed_s, 0) >= r.min_runtime_s
      AND NOT EXISTS (
          SELECT 1 FROM tw_exempt e
          WHERE (e.rule IS NULL OR e.rule = c.rule)
            AND ((e.kind = 'users' AND e.value = j.user_name)
              OR (e.kind = 'accounts' AND e.value = j.account)
              OR (e.kind = 'partitions' AND e.value = j.partition)
              OR (e.kind = 'qos' AND e.value = j.qos)
              OR (e.kind = 'job_names' AND e.value = j.job_name)))
)
-- fid: the finding's id within this analysis, by which its advice is stored with it.
SELECT k.*, row_number() OVER () AS fid
FROM kept k
WHERE NOT EXISTS (
    SELECT 1 FROM tw_suppress s JOIN kept other ON other.rule = s.by_rule
    WHERE s.rule = k.rule AND other.job_key = k.job_key
);
