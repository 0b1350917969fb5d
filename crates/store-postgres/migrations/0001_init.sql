-- Switchyard's schema, version 1. Applied once, inside one transaction,
-- by whichever daemon connects first (src/schema.rs).

-- One row per job. The queried fields are columns; the job as users see
-- it (`jobs --json`) is `job`, serde's JSON of switchyard_core::Job.
CREATE TABLE jobs (
    key      text    PRIMARY KEY,
    seq      bigint  NOT NULL,
    provider text    NOT NULL,
    state    text    NOT NULL,
    priority integer NOT NULL,
    -- The lease a live job is held under (NULL: not live, or no holder).
    owner    text,
    epoch    bigint,
    job      json    NOT NULL,
    history  json[]  NOT NULL
) WITH (
    -- Room on each page for a job's field-only updates (progress) to stay
    -- HOT: they touch no indexed column.
    fillfactor = 80,
    -- A queue table churns: vacuum after 1% of it changed, not 20%, and
    -- without sleeping, so dead versions of hot rows do not pile up.
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);

CREATE SEQUENCE job_seq AS bigint;

-- Only the jobs a claim looks for, in the order it takes them: finished
-- jobs are in no index but the primary key.
CREATE INDEX jobs_queued ON jobs (provider, priority DESC, seq) WHERE state = 'queued';
-- Live jobs, by holder: recover, rescue, the in-flight cap and listings
-- of live states.
CREATE INDEX jobs_live ON jobs (provider, state, owner, epoch)
    WHERE state IN ('submitting', 'pending', 'processing');

-- Credits per provider and budget period.
CREATE TABLE ledger (
    provider text   NOT NULL,
    period   text   NOT NULL,
    reserved bigint NOT NULL DEFAULT 0,
    charged  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (provider, period)
) WITH (fillfactor = 50, autovacuum_vacuum_threshold = 200, autovacuum_vacuum_cost_delay = 0);

-- Per provider: the shared rate gate (theoretical arrival time), a 429's
-- hold and a user's pause, in microseconds on the database's clock. Its
-- row is also what claims of one provider take turns on.
CREATE TABLE providers (
    provider      text    PRIMARY KEY,
    tat_us        bigint  NOT NULL DEFAULT 0,
    hold_until_us bigint  NOT NULL DEFAULT 0,
    paused        boolean NOT NULL DEFAULT false
) WITH (fillfactor = 50, autovacuum_vacuum_threshold = 200, autovacuum_vacuum_cost_delay = 0);

-- Leases: one heartbeat row per daemon.
CREATE TABLE daemons (
    owner      text        PRIMARY KEY,
    epoch      bigint      NOT NULL,
    expires_at timestamptz NOT NULL
) WITH (fillfactor = 50);

-- Jobs per provider and state: `counts` holds folded totals, and every
-- transaction that moves jobs appends its changes to `count_deltas`
-- (no row is shared between writers, so transitions never queue behind
-- one another on a counter). Folded in the background (src/counts.rs).
CREATE TABLE counts (
    provider text   NOT NULL,
    state    text   NOT NULL,
    n        bigint NOT NULL,
    PRIMARY KEY (provider, state)
);
CREATE TABLE count_deltas (
    provider text   NOT NULL,
    state    text   NOT NULL,
    n        bigint NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 5000,
        autovacuum_vacuum_cost_delay = 0);

-- What the scheduler learned, by the engine's own keys.
CREATE TABLE stats (
    key   text  PRIMARY KEY,
    bytes bytea NOT NULL
);
