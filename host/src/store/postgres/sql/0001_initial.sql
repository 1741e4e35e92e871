-- Warden schema, version 1: the generic tables, the typed run columns, the audit log.
-- Applied once, inside the migration transaction, by `warden db migrate` or at connect.
-- Never edit a released migration: add the next one.

-- Generic tables: a bytea key (bytewise order, as in sled) and the record's bytes (records
-- may hold NUL bytes, which text and jsonb refuse).
CREATE TABLE warden.users (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.roles (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.tokens (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.targets (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.credentials (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.leases (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.leases_by_run (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.leases_active (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.modules (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.module_blobs (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.publishers (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.processes (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.process_names (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.runs_by_time (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.runs_active (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.servers (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.run_cancels (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.schedules (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.approvals (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.notify_sinks (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.notify_cursors (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.notify_dead_letters (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.notify_rules (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.notify_settings (key bytea PRIMARY KEY, value bytea NOT NULL);

-- Runs, with the columns operators and the API filter on.
CREATE TABLE warden.runs (
    key bytea PRIMARY KEY,
    value bytea NOT NULL,
    state text,
    process_id text,
    actor text,
    created_ms bigint
);
CREATE INDEX runs_state_created ON warden.runs (state, created_ms);
CREATE INDEX runs_process_created ON warden.runs (process_id, created_ms);
CREATE INDEX runs_created ON warden.runs (created_ms);

-- The audit log: one row per record, its canonical bytes (what the chain hashes) plus the
-- columns the API's filters use, each with an index ordered by seq for cursor pagination.
CREATE TABLE warden.audit_records (
    seq bigint PRIMARY KEY CHECK (seq >= 0),
    time_ms bigint NOT NULL,
    run_id text,
    actor text NOT NULL,
    action text NOT NULL,
    resource text,
    credential text,
    hash text NOT NULL,
    prev_hash text NOT NULL,
    record bytea NOT NULL
);
CREATE INDEX audit_records_run ON warden.audit_records (run_id, seq);
CREATE INDEX audit_records_actor ON warden.audit_records (actor, seq);
CREATE INDEX audit_records_action ON warden.audit_records (action, seq);
CREATE INDEX audit_records_resource ON warden.audit_records (resource, seq);
CREATE INDEX audit_records_time ON warden.audit_records (time_ms, seq);

-- The chain's head: its one row is the lock every audit writer takes (one serialized writer
-- per chain, across servers) and holds the signed checkpoint.
CREATE TABLE warden.audit_head (
    id int PRIMARY KEY CHECK (id = 1),
    checkpoint bytea
);
INSERT INTO warden.audit_head (id, checkpoint) VALUES (1, NULL);

-- Append-only, whatever the role's grants: rows are never updated or deleted, the tables are
-- never truncated, the head row never goes away.
CREATE FUNCTION warden.audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the warden audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_records_no_change BEFORE UPDATE OR DELETE ON warden.audit_records
    FOR EACH ROW EXECUTE FUNCTION warden.audit_append_only();
CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON warden.audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION warden.audit_append_only();
CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON warden.audit_head
    FOR EACH ROW EXECUTE FUNCTION warden.audit_append_only();
CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON warden.audit_head
    FOR EACH STATEMENT EXECUTE FUNCTION warden.audit_append_only();
