-- pgconductor 0.1.0: tables and indexes.
-- One set of tables with `queue` as a column, so that claim and report are
-- static SQL that Postgres plans once (no table per queue).

\echo Use "CREATE EXTENSION pgconductor" to load this file. \quit

-- Registered queues (created by workers when they register).
create table pgconductor._queues (
    name text primary key,
    created_at timestamptz not null
);

-- Registered tasks: their queue, attempts and retention, as last declared by a worker.
-- A null retention interval keeps rows forever; '0' deletes them when they finish.
create table pgconductor._tasks (
    name text primary key,
    queue text not null,
    max_attempts int not null default 3 check (max_attempts > 0),
    concurrency int check (concurrency > 0),  -- at most this many running at once; null: no limit
    batch_size int check (batch_size > 0),    -- batch task: handlers get groups of up to this many
    batch_timeout_ms int check (batch_timeout_ms >= 0),  -- ... or fewer once the oldest waited this long
    remove_on_complete interval default interval '7 days',
    remove_on_fail interval default interval '30 days',
    -- Time window (local wall-clock times in window_timezone): executions start only while
    -- it is open; window_end < window_start crosses midnight. All three null: no window.
    window_start time,
    window_end time,
    window_timezone text,
    updated_at timestamptz not null,
    check ((window_start is null) = (window_end is null) and (window_start is null) = (window_timezone is null)),
    check (window_start is distinct from window_end or window_start is null)
);

create sequence pgconductor._executions_seq;

-- Every execution of every task. `seq` is insertion order (the last tie-breaker
-- of the claim order); `expires_at` is set when an execution finishes, from its
-- task's retention, so maintenance deletes by one small index.
create table pgconductor._executions (
    id uuid primary key default gen_random_uuid(),
    seq bigint not null default nextval('pgconductor._executions_seq'),
    task_name text not null,
    queue text not null,
    status text not null default 'pending'
        check (status in ('pending', 'running', 'waiting', 'completed', 'failed', 'cancelled')),
    payload jsonb not null default '{}',
    result jsonb,
    error jsonb,
    attempts int not null default 0,
    -- Claims so far: the current run's token. Unlike attempts it never goes back (a sleep,
    -- a wait or a release hands the attempt back), so a late message of an earlier run
    -- can never pass for the current one.
    claims int not null default 0,
    max_attempts int,  -- null: the task's registered max_attempts (else 3), read when it matters
    priority int not null default 0,
    run_at timestamptz not null,
    created_at timestamptz not null,
    started_at timestamptz,
    finished_at timestamptz,
    expires_at timestamptz,
    dedupe_key text,
    parent_id uuid,    -- set on a child execution: the execution whose ctx.invoke created it
    parent_step text,  -- ... and the step name under which its outcome is saved in the parent
    wait_step text,    -- while waiting: the step (a child's or a sleep's) whose saving ends the wait
    batch_id uuid,
    event_name text not null default 'pgconductor.invoke',
    worker_id uuid,
    cancel_reason text,
    debounce_key text  -- set on debounced executions: their dedupe_key, or '' for the task as a whole
);

alter sequence pgconductor._executions_seq owned by pgconductor._executions.seq;

-- The claim's index: only pending rows, in claim order. Finished rows never enter it.
create index _executions_ready on pgconductor._executions (queue, priority desc, run_at, seq)
    where status = 'pending';
-- The same per task: claims of tasks with a concurrency limit or a batch size pick and
-- count their own ready rows through it, whatever else waits in the queue.
create index _executions_ready_by_task on pgconductor._executions (queue, task_name, priority desc, run_at, seq)
    where status = 'pending';
-- Waiting executions (asleep, waiting on a child or a window) by wake-up time: claims
-- move the due ones back to pending. A child without a timeout wakes its parent itself
-- (run_at infinity).
create index _executions_waiting on pgconductor._executions (queue, run_at)
    where status = 'waiting';
-- Dedupe look-ups by (task, queue, key).
create index _executions_dedupe on pgconductor._executions (task_name, queue, dedupe_key)
    where dedupe_key is not null;
-- The pending execution of a debounce key (at most one).
create index _executions_debounce on pgconductor._executions (task_name, queue, debounce_key)
    where debounce_key is not null and status = 'pending';
-- Running executions by task (concurrency limits count them) and holder (heartbeats,
-- cancellation, lease recovery); only running rows, so it stays small.
create index _executions_running on pgconductor._executions (task_name, worker_id)
    where status = 'running';
-- Children by parent: a child is created once per (parent, step); cancels cascade through it.
create unique index _executions_children on pgconductor._executions (parent_id, parent_step)
    where parent_id is not null;
-- Retention: finished rows with a deadline.
create index _executions_expiry on pgconductor._executions (expires_at)
    where expires_at is not null;

-- Throttle windows: while window_ends_at is in the future, calls with this key queue
-- nothing. key is the dedupe_key, or '' for the task as a whole.
create table pgconductor._throttles (
    task_name text not null,
    queue text not null,
    key text not null,
    window_ends_at timestamptz not null,
    primary key (task_name, queue, key)
);

-- Saved step results of durable executions (used by ctx.step).
create table pgconductor._steps (
    execution_id uuid not null references pgconductor._executions (id) on delete cascade,
    name text not null,
    result jsonb,
    created_at timestamptz not null,
    primary key (execution_id, name)
);

-- Live workers (one row per worker process) and their lease.
create table pgconductor._workers (
    id uuid primary key,
    name text not null,
    queues text[] not null default '{}',
    lease interval not null default interval '60 seconds',
    started_at timestamptz not null,
    last_seen_at timestamptz not null
);

-- The fake clock: at most one row; read only where fake time is allowed.
create table pgconductor._clock (
    only_row boolean primary key default true check (only_row),
    fake_time timestamptz not null
);

-- pg_dump keeps user data of extension tables only when they are registered.
select pg_catalog.pg_extension_config_dump('pgconductor._queues', '');
select pg_catalog.pg_extension_config_dump('pgconductor._tasks', '');
select pg_catalog.pg_extension_config_dump('pgconductor._executions', '');
select pg_catalog.pg_extension_config_dump('pgconductor._executions_seq', '');
select pg_catalog.pg_extension_config_dump('pgconductor._steps', '');
select pg_catalog.pg_extension_config_dump('pgconductor._throttles', '');
