-- The views users read: pgconductor.executions (every execution, SPEC §2 columns)
-- and pgconductor.queue_stats (per queue and task: counts by status, oldest ready
-- pending age by pgconductor.now()); get_execution returns one executions row.
\i ../tests/sql/include/reset.sql
-- claiming workers hold live leases (claim refuses unknown or expired workers)
select count(pgconductor.register_worker(w.id, 'w', '[]', 2000000000))
from (values ('00000000-0000-0000-0000-000000000001'::uuid), ('00000000-0000-0000-0000-000000000002'::uuid)) w(id);
select pgconductor.set_fake_time('2026-01-01 00:00:00+00');

---------------------------------------------------------------- executions
-- the columns of SPEC §2, in that order, then worker_id, cancel_reason, expires_at
select ordinal_position as pos, column_name, data_type
from information_schema.columns
where table_schema = 'pgconductor' and table_name = 'executions'
order by ordinal_position;

-- one row per execution, with the values of the underlying row
select pgconductor.invoke('view_task', '{"a": 1}', dedupe_key => 'v', priority => 2) as id \gset
select task_name, queue, status, payload, result, error, attempts, max_attempts, priority,
       run_at = pgconductor.now() as run_at_now, created_at = pgconductor.now() as created_now,
       started_at, finished_at, dedupe_key, parent_id, batch_id, event_name, worker_id,
       cancel_reason, expires_at
from pgconductor.executions where id = :'id';

-- get_execution returns exactly that row
select (select g from pgconductor.get_execution(:'id') g) = (select x from pgconductor.executions x where x.id = :'id') as same_row;
select count(*) as found from pgconductor.get_execution(:'id');
-- an unknown id gives no row
select count(*) as found from pgconductor.get_execution('00000000-0000-0000-0000-0000000000ff');

---------------------------------------------------------------- queue_stats
truncate pgconductor._executions cascade;
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w1', $$[
    {"name": "mail", "queue": "emails"},
    {"name": "report", "max_attempts": 1},
    {"name": "idle", "queue": "emails"}]$$, 2000000000);

-- the columns of queue_stats
select ordinal_position as pos, column_name, data_type
from information_schema.columns
where table_schema = 'pgconductor' and table_name = 'queue_stats'
order by ordinal_position;

-- registered tasks without executions appear with zeros and no age
select * from pgconductor.queue_stats order by queue, task_name;

-- mail: pending since 00:00 and 00:00:30, one pending in the future, one running, one completed
select pgconductor.invoke('mail', '{"n": 1}') is not null as ok;
select pgconductor.invoke('mail', '{"n": 2}', run_at => '2026-01-01 06:00:00+00') is not null as ok;
select pgconductor.invoke('mail', '{"n": 3}', priority => 10) as running_id \gset
select pgconductor.invoke('mail', '{"n": 4}', priority => 9) as done_id \gset
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'emails', p_limit => 2);
select pgconductor.report('00000000-0000-0000-0000-000000000001',
    jsonb_build_array(jsonb_build_object('id', :'done_id'::uuid, 'run', 1, 'outcome', 'completed'))) as applied;
select pgconductor.set_fake_time('2026-01-01 00:00:30+00');
select pgconductor.invoke('mail', '{"n": 5}') is not null as ok;
-- report (queue default): one failed, one cancelled, one pending
select pgconductor.invoke('report', '{"n": 6}') as failed_id \gset
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default');
select pgconductor.report('00000000-0000-0000-0000-000000000001',
    jsonb_build_array(jsonb_build_object('id', :'failed_id'::uuid, 'run', 1, 'outcome', 'failed'))) as applied;
select pgconductor.cancel(pgconductor.invoke('report', '{"n": 7}')) as cancelled;
select pgconductor.invoke('report', '{"n": 8}') is not null as ok;
-- an unregistered task in its own queue
select pgconductor.invoke('adhoc', queue => 'misc') is not null as ok;

-- at 00:01:30 the oldest ready pending mail waited 90 s (the future one does not count),
-- the oldest report 60 s, adhoc 60 s; idle has no executions
select pgconductor.set_fake_time('2026-01-01 00:01:30+00');
select * from pgconductor.queue_stats order by queue, task_name;

-- the age follows the clock
select pgconductor.set_fake_time('2026-01-01 01:00:00+00');
select queue, task_name, oldest_pending_age from pgconductor.queue_stats
where oldest_pending_age is not null order by queue, task_name;

-- once nothing ready is pending, the age is null while the counts remain
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'emails', p_limit => 10);
select queue, task_name, pending, running, oldest_pending_age
from pgconductor.queue_stats where task_name = 'mail';
-- a future run_at counts when the clock reaches it
select pgconductor.set_fake_time('2026-01-01 06:00:10+00');
select queue, task_name, pending, oldest_pending_age
from pgconductor.queue_stats where task_name = 'mail';
