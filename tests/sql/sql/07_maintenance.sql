-- Maintenance: lease recovery (executions of workers whose heartbeat is older
-- than their lease go back to pending, counting the attempt, or fail at
-- max_attempts), retention (finished rows deleted when they expire), and
-- unregister_worker (a clean stop hands back what the worker held).
\i ../tests/sql/include/reset.sql
select pgconductor.set_fake_time('2026-01-01 00:00:00+00');

-- nothing to do: run_maintenance reports zeros, maintenance reports that it ran
select pgconductor.run_maintenance() as totals;
select pgconductor.maintenance() as step;

---------------------------------------------------------------- lease recovery
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w1',
    '[{"name": "job"}, {"name": "last", "max_attempts": 1}]', p_lease_seconds => 60);
select lease from pgconductor._workers where id = '00000000-0000-0000-0000-000000000001';
select pgconductor.invoke('job', '{"n": 1}') as id \gset
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset

-- exactly at the end of the lease the worker still counts as alive
select pgconductor.set_fake_time('2026-01-01 00:01:00+00');
select pgconductor.run_maintenance() as totals;
select status, worker_id is not null as held from pgconductor.executions where id = :'id';

-- one second later its execution is recovered: pending again, due now, the attempt
-- counted, error WorkerLost, no holder
select pgconductor.set_fake_time('2026-01-01 00:01:01+00');
select pgconductor.run_maintenance() as totals;
select status, attempts, run_at = pgconductor.now() as due_now, error ->> 'type' as error_type,
       worker_id, finished_at
from pgconductor.executions where id = :'id';
-- the lost worker is forgotten: its heartbeat returns null (it must register again) ...
select count(*) as workers from pgconductor._workers;
select pgconductor.heartbeat('00000000-0000-0000-0000-000000000001') is null as must_register;
-- ... and its late report is ignored
select pgconductor.report('00000000-0000-0000-0000-000000000001',
    jsonb_build_array(jsonb_build_object('id', :'id'::uuid, 'run', :run, 'outcome', 'completed'))) as applied;
-- the next claim is attempt 2
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w1',
    '[{"name": "job"}, {"name": "last", "max_attempts": 1}]', p_lease_seconds => 60);
select attempt from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default');

-- a worker that keeps heartbeating keeps its executions
select pgconductor.set_fake_time('2026-01-01 00:01:50+00');
select pgconductor.heartbeat('00000000-0000-0000-0000-000000000001') as to_cancel;
select pgconductor.set_fake_time('2026-01-01 00:02:40+00');
select pgconductor.run_maintenance() as totals;
select status, attempts from pgconductor.executions where id = :'id';

-- lost on its last attempt: failed, error WorkerLost, finished now, kept 30 days
select pgconductor.invoke('last', '{"n": 2}') as last_id \gset
select pgconductor.invoke('job', '{"n": 3}') as flagged_id \gset
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', p_limit => 10);
-- (and one flagged for cancel: it ends cancelled)
select pgconductor.cancel(:'flagged_id', 'no longer wanted') as cancelled;
select pgconductor.set_fake_time('2026-01-01 00:05:00+00');
select pgconductor.run_maintenance() as totals;
select payload ->> 'n' as n, status, attempts, max_attempts, error ->> 'type' as error_type,
       finished_at = pgconductor.now() as finished_now, expires_at - finished_at as kept_for
from pgconductor.executions order by 1;

---------------------------------------------------------------- unregister_worker
truncate pgconductor._executions cascade;
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w1', '[{"name": "job"}]');
select pgconductor.invoke('job', '{"n": 1}') as id \gset
select pgconductor.invoke('job', '{"n": 2}') as id2 \gset
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', p_limit => 10);
select pgconductor.cancel(:'id2') as cancelled;
-- a clean stop returns how many executions it still held ...
select pgconductor.unregister_worker('00000000-0000-0000-0000-000000000001') as released;
-- ... the plain one is pending again without counting the attempt, the flagged one is cancelled
select payload ->> 'n' as n, status, attempts, worker_id from pgconductor.executions order by 1;
-- ... and the worker is gone
select count(*) as workers from pgconductor._workers;
-- unregistering an unknown worker is harmless
select pgconductor.unregister_worker('00000000-0000-0000-0000-0000000000ff') as released;

---------------------------------------------------------------- release_orphans
-- after a lost connection a worker releases what it holds but never received:
-- every running execution of that worker not in p_held goes back to pending,
-- the attempt not counted; the ones it holds stay running
truncate pgconductor._executions cascade;
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w1', '[{"name": "job"}]');
select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w2', '[{"name": "job"}]');
select pgconductor.invoke('job', '{"n": 1}') as id \gset
select pgconductor.invoke('job', '{"n": 2}') is not null as ok;
select pgconductor.invoke('job', '{"n": 3}') is not null as ok;
select pgconductor.invoke('job', '{"n": 4}') is not null as ok;
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', p_limit => 3);
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000002', 'default', p_limit => 3);
select pgconductor.release_orphans('00000000-0000-0000-0000-000000000001', array[:'id'::uuid]) as released;
-- n1 (held) still running; n2, n3 pending with no attempt counted; w2's n4 untouched
select payload ->> 'n' as n, status, attempts, worker_id from pgconductor.executions order by 1;
-- nothing left to release; a null list releases everything the worker holds
select pgconductor.release_orphans('00000000-0000-0000-0000-000000000001', array[:'id'::uuid]) as released;
select pgconductor.release_orphans('00000000-0000-0000-0000-000000000001', null) as released;
select payload ->> 'n' as n, status, attempts from pgconductor.executions order by 1;
delete from pgconductor._workers;

---------------------------------------------------------------- retention
truncate pgconductor._executions cascade;
select pgconductor.set_fake_time('2026-01-01 00:00:00+00');
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w1', $$[
    {"name": "day", "remove_on_complete": {"days": 1}, "remove_on_fail": {"days": 2}, "max_attempts": 1},
    {"name": "forever", "remove_on_complete": false, "remove_on_fail": false},
    {"name": "defaults"}]$$);
-- retention as stored per task: an interval, or null for keep forever
select name, remove_on_complete, remove_on_fail from pgconductor._tasks order by name;

-- day/completed, day/failed and defaults/completed finish at 00:00
select pgconductor.invoke('day', '{"k": "day completed"}') as c_id \gset
select pgconductor.invoke('day', '{"k": "day failed"}') as f_id \gset
select pgconductor.invoke('defaults', '{"k": "defaults completed"}') as d_id \gset
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', p_limit => 10);
select pgconductor.report('00000000-0000-0000-0000-000000000001', jsonb_build_array(
    jsonb_build_object('id', :'c_id'::uuid, 'run', 1, 'outcome', 'completed'),
    jsonb_build_object('id', :'f_id'::uuid, 'run', 1, 'outcome', 'failed', 'error', '{"message": "x"}'::jsonb),
    jsonb_build_object('id', :'d_id'::uuid, 'run', 1, 'outcome', 'completed'))) as applied;
-- a step of the completed one (deleted with it)
insert into pgconductor._steps (execution_id, name, result, created_at)
values (:'c_id', 'one', '1', pgconductor.now());
-- forever: a cancelled execution with remove_on_fail false never expires
select pgconductor.invoke('forever', '{"k": "forever cancelled"}') as k_id \gset
select pgconductor.cancel(:'k_id') as cancelled;
select payload ->> 'k' as k, status, expires_at - finished_at as kept_for
from pgconductor.executions order by 1;

-- after 23 hours everything is still there
select pgconductor.set_fake_time('2026-01-01 23:00:00+00');
select pgconductor.run_maintenance() as totals;
select payload ->> 'k' as k from pgconductor.executions order by 1;

-- after 25 hours the completed one with {"days": 1} is gone, and its steps with it
select pgconductor.set_fake_time('2026-01-02 01:00:00+00');
select pgconductor.run_maintenance() as totals;
select payload ->> 'k' as k from pgconductor.executions order by 1;
select count(*) as steps from pgconductor._steps;

-- after 49 hours the failed one with {"days": 2} is gone
select pgconductor.set_fake_time('2026-01-03 01:00:00+00');
select pgconductor.run_maintenance() as totals;
select payload ->> 'k' as k from pgconductor.executions order by 1;

-- the default keeps completed executions 7 days
select pgconductor.set_fake_time('2026-01-07 23:59:59+00');
select pgconductor.run_maintenance() as totals;
select pgconductor.set_fake_time('2026-01-08 00:00:00+00');
select pgconductor.run_maintenance() as totals;
select payload ->> 'k' as k from pgconductor.executions order by 1;

-- remove_on_* false keeps rows forever
select pgconductor.set_fake_time('2036-01-01 00:00:00+00');
select pgconductor.run_maintenance() as totals;
select payload ->> 'k' as k, status from pgconductor.executions order by 1;

---------------------------------------------------------------- bounded chunks
-- maintenance(p_chunk) deletes at most p_chunk expired rows and says whether more are left
truncate pgconductor._executions cascade;
select count(*) as queued from (
    select pgconductor.invoke('day', jsonb_build_object('n', n)) from generate_series(1, 3) n) x;
select count(*) as cancelled from (
    select pgconductor.cancel(id) from pgconductor._executions) x;
select pgconductor.set_fake_time('2036-01-10 00:00:00+00');
select pgconductor.maintenance(2) as step;
select pgconductor.maintenance(2) as step;
select count(*) as rows_left from pgconductor._executions;
-- a non-positive chunk is invalid input (PGC01)
select pgconductor.maintenance(0);
select pgconductor.maintenance(null);

-- release_orphans ends a cancel-requested orphan cancelled (it must not run again),
-- and a null in the held list does not stop the release of the others
truncate pgconductor._executions cascade;
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w1', '[]', 2000000000);
select pgconductor.invoke('job') as id \gset
select pgconductor.invoke('job') as id2 \gset
select count(*) from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', null, 2);
select pgconductor.cancel(:'id', 'stop it') as cancel_requested;
select pgconductor.release_orphans('00000000-0000-0000-0000-000000000001', array[null]::uuid[]) as released;
select id = :'id' as is_cancelled_one, status, attempts, error ->> 'type' as type
from pgconductor.executions order by status;

-- heartbeat with the held list releases what the worker holds unknowingly, once it is
-- older than the grace period (a claim whose answer was lost); held ones stay running
truncate pgconductor._executions cascade;
select pgconductor.invoke('job') as id \gset
select pgconductor.invoke('job') as id2 \gset
select count(*) from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', null, 2);
-- within the grace period nothing is released
select pgconductor.heartbeat('00000000-0000-0000-0000-000000000001', array[:'id'::uuid], interval '30 seconds') as cancels;
select count(*) filter (where status = 'running') as running from pgconductor._executions;
select pgconductor.set_fake_time(pgconductor.now() + interval '31 seconds');
select pgconductor.heartbeat('00000000-0000-0000-0000-000000000001', array[:'id'::uuid], interval '30 seconds') as cancels;
select id = :'id' as held, status, attempts from pgconductor.executions order by status desc;
