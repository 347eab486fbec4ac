"""The SQL of a member import batch (`handlers.member_import.apply` says what each step does).

Every statement works on one batch: the staged rows of job `:job` numbered `:lo`–`:hi` that are in
phase `:phase`.
"""

LOCK_SQL = "SELECT pg_advisory_xact_lock(:lock_class, :merchant) IS NULL AS locked"
BOUNDS_SQL = """
SELECT min(row_no) AS lo, max(row_no) AS hi
  FROM (SELECT row_no FROM member_import_row
         WHERE job_id = :job AND phase = :phase ORDER BY row_no LIMIT :size) b
"""
EXPIRED_SQL = """
UPDATE member_import_row r SET status = 'rejected', field = 'points_expire_on', reason = :reason
 WHERE r.job_id = :job AND r.row_no BETWEEN :lo AND :hi AND r.phase = :phase
    AND r.status = 'pending' AND r.points > 0 AND r.points_expire_at <= :now
"""
BY_EXTERNAL_ID_SQL = """
UPDATE member_import_row r
   SET member_id = m.id,
       status = CASE WHEN m.anonymized_at IS NULL THEN r.status ELSE 'rejected' END,
       field = CASE WHEN m.anonymized_at IS NULL THEN r.field ELSE 'external_id' END,
       reason = CASE WHEN m.anonymized_at IS NULL THEN r.reason ELSE :erased END
  FROM member m
 WHERE r.job_id = :job AND r.row_no BETWEEN :lo AND :hi AND r.phase = :phase
   AND r.status = 'pending' AND r.external_id IS NOT NULL
   AND m.merchant_id = :merchant AND m.external_id = r.external_id
"""
BY_PHONE_SQL = """
WITH hits AS MATERIALIZED (
    SELECT r.id, h.n, h.member_id, r.external_id IS NULL AS by_phone
      FROM member_import_row r
     CROSS JOIN LATERAL (
        SELECT count(*) AS n, min(m.id) AS member_id FROM member m
         WHERE m.merchant_id = :merchant AND m.phone = r.phone AND m.anonymized_at IS NULL
           AND (r.external_id IS NULL OR m.external_id IS NULL)) h
     WHERE r.job_id = :job AND r.row_no BETWEEN :lo AND :hi AND r.phase = :phase
       AND r.status = 'pending' AND r.member_id IS NULL AND r.phone IS NOT NULL
       AND (r.external_id IS NULL OR NOT r.phone_shared) AND h.n > 0)
UPDATE member_import_row r
   SET member_id = CASE WHEN h.n = 1 THEN h.member_id END,
       status = CASE WHEN h.n > 1 AND h.by_phone THEN 'rejected' ELSE r.status END,
       field = CASE WHEN h.n > 1 AND h.by_phone THEN 'phone' ELSE r.field END,
       reason = CASE WHEN h.n > 1 AND h.by_phone THEN :ambiguous ELSE r.reason END
  FROM hits h WHERE r.id = h.id
"""
CREATE_SQL = """
WITH todo AS MATERIALIZED (
    SELECT r.* FROM member_import_row r
     WHERE r.job_id = :job AND r.row_no BETWEEN :lo AND :hi AND r.phase = :phase
        AND r.status = 'pending' AND r.member_id IS NULL ORDER BY r.row_no),
made AS (
    INSERT INTO member (merchant_id, code, external_id, phone, name, gender, birthday, registered_at, source,
                        subscribed, import_hash, profile_completed_at)
    SELECT :merchant, t.new_code, t.external_id, t.phone, t.name, t.gender, t.birthday, :now::timestamptz,
           'import', false, t.row_hash,
           CASE WHEN t.phone IS NOT NULL AND t.birthday IS NOT NULL AND t.gender IS NOT NULL
                THEN :now::timestamptz END
      FROM todo t
    ON CONFLICT DO NOTHING
    RETURNING id, code),
marked AS (
    UPDATE member_import_row r SET member_id = made.id, status = 'created'
      FROM made JOIN todo t ON t.new_code = made.code WHERE r.id = t.id
    RETURNING r.row_no)
SELECT (SELECT count(*) FROM todo) AS wanted, (SELECT count(*) FROM marked) AS made
"""
UNCODED_SQL = """
SELECT r.row_no FROM member_import_row r
 WHERE r.job_id = :job AND r.row_no BETWEEN :lo AND :hi AND r.phase = :phase
   AND r.status = 'pending' AND r.member_id IS NULL
"""
RECODE_SQL = """
UPDATE member_import_row r SET new_code = v.code
  FROM unnest(:rows::integer[], :codes::text[]) AS v(row_no, code)
 WHERE r.job_id = :job AND r.row_no = v.row_no
"""
TIER_SQL = """
WITH todo AS (
    SELECT r.id, r.member_id, r.tier_code, COALESCE(t.tier_code, :base) AS old_code
      FROM member_import_row r
      JOIN member m ON m.id = r.member_id
      LEFT JOIN member_tier t ON t.member_id = r.member_id
     WHERE r.job_id = :job AND r.row_no BETWEEN :lo AND :hi AND r.phase = :phase AND r.tier_code IS NOT NULL
       -- the rows whose profile this import applies: new members, and members whose last imported
       -- profile differs
       AND (r.status = 'created' OR (r.status = 'pending' AND m.import_hash IS DISTINCT FROM r.row_hash))
       AND r.tier_code <> COALESCE(t.tier_code, :base)),
moved AS (
    INSERT INTO member_tier (merchant_id, member_id, tier_code, since)
    SELECT :merchant, member_id, tier_code, :now FROM todo
    ON CONFLICT (member_id) DO UPDATE SET tier_code = EXCLUDED.tier_code, since = EXCLUDED.since
    RETURNING member_id),
logged AS (
    INSERT INTO tier_change (merchant_id, member_id, from_code, to_code, reason, idempotency_key, created_at)
    SELECT :merchant, member_id, old_code, tier_code, 'import', :tier_key::text || member_id::text, :now
      FROM todo
    ON CONFLICT DO NOTHING
    RETURNING member_id)
UPDATE member_import_row r SET status = 'updated'
  FROM todo WHERE r.id = todo.id AND r.status = 'pending'
"""
PROFILE_SQL = """
WITH changed AS (
    UPDATE member m
       SET name = COALESCE(r.name, m.name), phone = COALESCE(r.phone, m.phone),
           gender = COALESCE(r.gender, m.gender), birthday = COALESCE(r.birthday, m.birthday),
           external_id = COALESCE(m.external_id, r.external_id), import_hash = r.row_hash,
           profile_completed_at = COALESCE(m.profile_completed_at, CASE
               WHEN COALESCE(r.phone, m.phone) IS NOT NULL AND COALESCE(r.birthday, m.birthday) IS NOT NULL
                    AND COALESCE(r.gender, m.gender) IS NOT NULL THEN :now::timestamptz END)
      FROM member_import_row r, member o
     WHERE r.job_id = :job AND r.row_no BETWEEN :lo AND :hi AND r.phase = :phase
        AND r.status IN ('pending', 'updated') AND r.member_id = m.id AND o.id = m.id
       AND m.import_hash IS DISTINCT FROM r.row_hash
    RETURNING m.id, (o.name, o.phone, o.gender, o.birthday, o.external_id)
                    IS DISTINCT FROM (m.name, m.phone, m.gender, m.birthday, m.external_id) AS differs)
UPDATE member_import_row r SET status = 'updated'
  FROM changed c WHERE r.job_id = :job AND r.row_no BETWEEN :lo AND :hi AND r.phase = :phase
     AND r.member_id = c.id AND c.differs AND r.status = 'pending'
"""
POINTS_SQL = """
WITH todo AS MATERIALIZED (
    SELECT r.id, r.member_id, r.points, r.points_expire_at FROM member_import_row r
     WHERE r.job_id = :job AND r.row_no BETWEEN :lo AND :hi AND r.phase = :phase
        AND r.status IN ('pending', 'created', 'updated') AND r.points > 0
       AND NOT EXISTS (SELECT 1 FROM points_transaction t WHERE t.merchant_id = :merchant
                          AND t.idempotency_key = :key::text || r.member_id::text)
     ORDER BY r.member_id),
posted AS (
    SELECT todo.id, c.transaction_id FROM todo
     CROSS JOIN LATERAL memberbot_points_account(:merchant, todo.member_id) a
     CROSS JOIN LATERAL memberbot_points_credit(
         a.id, todo.points, 'opening', :key::text || todo.member_id::text, :reference, :actor, :reason, :now,
         todo.points_expire_at) c)
SELECT count(*) AS posted FROM posted
"""
STORED_SQL = """
WITH todo AS MATERIALIZED (
    SELECT r.id, r.member_id, r.stored_value_fen FROM member_import_row r
     WHERE r.job_id = :job AND r.row_no BETWEEN :lo AND :hi AND r.phase = :phase
        AND r.status IN ('pending', 'created', 'updated') AND r.stored_value_fen > 0
       AND NOT EXISTS (SELECT 1 FROM wallet_transaction t WHERE t.merchant_id = :merchant
                          AND t.idempotency_key = :key::text || r.member_id::text)
     ORDER BY r.member_id),
posted AS (
    SELECT todo.id, w.id AS transaction_id FROM todo
     CROSS JOIN LATERAL memberbot_wallet_account(:merchant, todo.member_id) a
     CROSS JOIN LATERAL memberbot_wallet_post(a.id, 'opening', todo.stored_value_fen, 0,
                                              :key::text || todo.member_id::text, :reference, :actor, :reason,
                                              NULL, :now) w)
SELECT count(*) AS posted FROM posted
"""
WELCOME_SOURCE = """
SELECT r.member_id AS id FROM member_import_row r
 WHERE r.job_id = :job AND r.row_no BETWEEN :lo AND :hi AND r.phase = :phase AND r.status = 'created'
"""
OUTCOMES_SQL = """
SELECT r.row_no, r.status, r.field, r.reason, r.note FROM member_import_row r
 WHERE r.job_id = :job AND r.row_no BETWEEN :lo AND :hi ORDER BY r.row_no
"""
PHASE_SQL = """
UPDATE member_import_row r SET phase = :to
 WHERE r.job_id = :job AND r.row_no BETWEEN :lo AND :hi AND r.phase = :phase
"""
# The end of a batch (phase 1 → 2), from what the ledgers hold under each member's opening key: a row
# whose balance this job posted is `updated`, one still pending `unchanged`; an opening balance posted
# before with another amount is noted.
FINISH_SQL = """
UPDATE member_import_row r
   SET phase = 2,
       status = CASE WHEN r.status <> 'pending' THEN r.status
                     WHEN p.reference = :reference OR w.reference = :reference THEN 'updated'
                     ELSE 'unchanged' END,
       note = CASE WHEN r.status = 'rejected' THEN r.note ELSE concat_ws('；', NULLIF(r.note, ''),
                  CASE WHEN r.points > 0 AND p.delta <> r.points
                       THEN format(:points_note, p.delta, r.points) END,
                  CASE WHEN r.stored_value_fen > 0 AND w.principal_delta <> r.stored_value_fen
                       THEN format(:stored_note, w.principal_delta, r.stored_value_fen) END) END
  FROM member_import_row s
  LEFT JOIN points_transaction p
         ON p.merchant_id = :merchant AND p.idempotency_key = :key::text || s.member_id::text
  LEFT JOIN wallet_transaction w
         ON w.merchant_id = :merchant AND w.idempotency_key = :key::text || s.member_id::text
 WHERE s.id = r.id AND r.job_id = :job AND r.row_no BETWEEN :lo AND :hi AND r.phase = 1
RETURNING r.row_no
"""
WRITE_OUTCOMES_SQL = """
UPDATE member_import_row r SET status = v.status, field = v.field, reason = v.reason, note = v.note,
                               phase = 2,
                               member_id = CASE WHEN v.status = 'created' THEN NULL ELSE r.member_id END
  FROM unnest(:rows::integer[], :statuses::text[], :fields::text[], :reasons::text[], :notes::text[])
       AS v(row_no, status, field, reason, note)
 WHERE r.job_id = :job AND r.row_no = v.row_no
"""
COUNTS_SQL = """
UPDATE member_import j
   SET processed_rows = c.processed, created = c.created, updated = c.updated, unchanged = c.unchanged,
       rejected = c.rejected
  FROM (SELECT count(*) FILTER (WHERE phase = 2) AS processed,
               count(*) FILTER (WHERE status = 'created') AS created,
               count(*) FILTER (WHERE status = 'updated') AS updated,
               count(*) FILTER (WHERE status = 'unchanged') AS unchanged,
               count(*) FILTER (WHERE status = 'rejected') AS rejected
          FROM member_import_row WHERE job_id = :job) c
 WHERE j.id = :job
"""
