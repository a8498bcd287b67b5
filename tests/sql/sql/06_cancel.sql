-- pgconductor.cancel: pending -> cancelled at once (never runs); running -> flagged,
-- reported to its worker by heartbeat, and ended cancelled (not retried) by the
-- worker's next failed or released report; finished -> false.
\i ../tests/sql/include/reset.sql
-- claiming workers hold live leases (claim refuses unknown or expired workers)
select count(pgconductor.register_worker(w.id, 'w', '[]', 2000000000))
from (values ('00000000-0000-0000-0000-000000000001'::uuid), ('00000000-0000-0000-0000-000000000002'::uuid)) w(id);
select pgconductor.set_fake_time('2026-01-01 00:00:00+00');
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w1', '[{"name": "job"}]', 2000000000);

---------------------------------------------------------------- pending
select pgconductor.invoke('job', '{"n": 1}') as id \gset
select pgconductor.set_fake_time('2026-01-01 00:00:05+00');
-- cancelling a pending execution returns true
select pgconductor.cancel(:'id', 'not needed') as cancelled;
-- it is cancelled now, with the reason as its error, finished now, kept 30 days (remove_on_fail)
select status, cancel_reason, error, attempts, finished_at = pgconductor.now() as finished_now,
       expires_at - finished_at as kept_for
from pgconductor.executions where id = :'id';
-- it is never claimed
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default');
-- cancelling it again returns false and changes nothing
select pgconductor.cancel(:'id', 'again') as cancelled;
select status, cancel_reason from pgconductor.executions where id = :'id';

-- the reason defaults to 'cancelled' (also when passed as null)
select pgconductor.invoke('job', '{"n": 2}') as id \gset
select pgconductor.cancel(:'id') as cancelled;
select pgconductor.invoke('job', '{"n": 3}') as id2 \gset
select pgconductor.cancel(:'id2', null) as cancelled;
select payload ->> 'n' as n, status, cancel_reason, error ->> 'message' as message
from pgconductor.executions where id in (:'id', :'id2') order by 1;

-- an unknown id returns false
select pgconductor.cancel('00000000-0000-0000-0000-0000000000ff') as cancelled;

---------------------------------------------------------------- finished
-- a completed execution cannot be cancelled: false, still completed
select pgconductor.invoke('job', '{"n": 4}') as id \gset
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.report('00000000-0000-0000-0000-000000000001',
    jsonb_build_array(jsonb_build_object('id', :'id'::uuid, 'run', :run, 'outcome', 'completed'))) as applied;
select pgconductor.cancel(:'id') as cancelled;
select status, cancel_reason is null as no_reason from pgconductor.executions where id = :'id';

---------------------------------------------------------------- running, then failed
select pgconductor.invoke('job', '{"n": 5}') as id \gset
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
-- a heartbeat without cancel requests returns an empty list
select pgconductor.heartbeat('00000000-0000-0000-0000-000000000001') as to_cancel;
-- cancelling a running execution returns true ...
select pgconductor.cancel(:'id', 'user asked') as cancelled;
-- ... and only flags it: still running, held by its worker, reason recorded
select status, cancel_reason, worker_id, finished_at is null as not_finished
from pgconductor.executions where id = :'id';
-- a second cancel returns true and keeps the first reason
select pgconductor.cancel(:'id', 'second reason') as cancelled;
select cancel_reason from pgconductor.executions where id = :'id';
-- the worker's heartbeat returns the flagged execution
select pgconductor.heartbeat('00000000-0000-0000-0000-000000000001') = array[:'id'::uuid] as told_to_cancel;
-- another worker's heartbeat does not
select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w2', '[]', 2000000000);
select pgconductor.heartbeat('00000000-0000-0000-0000-000000000002') as to_cancel;
-- the handler raises Cancelled and the worker reports 'failed': cancelled, not retried,
-- the attempt counted, the error names the cancel reason
select pgconductor.report('00000000-0000-0000-0000-000000000001',
    jsonb_build_array(jsonb_build_object('id', :'id'::uuid, 'run', :run, 'outcome', 'failed',
                                         'error', '{"type": "Cancelled", "message": "from worker"}'::jsonb))) as applied;
select status, attempts, error, worker_id, finished_at = pgconductor.now() as finished_now,
       expires_at - finished_at as kept_for
from pgconductor.executions where id = :'id';
-- it is not retried: nothing to claim, even much later
select pgconductor.set_fake_time('2026-01-01 01:00:00+00');
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default');
-- and the heartbeat no longer lists it
select pgconductor.heartbeat('00000000-0000-0000-0000-000000000001') as to_cancel;

---------------------------------------------------------------- running, then released
select pgconductor.invoke('job', '{"n": 6}') as id \gset
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.cancel(:'id', 'stop it') as cancelled;
-- a release (e.g. at a checkpoint) of a flagged execution ends it cancelled, not pending
select pgconductor.report('00000000-0000-0000-0000-000000000001',
    jsonb_build_array(jsonb_build_object('id', :'id'::uuid, 'run', :run, 'outcome', 'released'))) as applied;
select status, attempts, error, finished_at is not null as finished
from pgconductor.executions where id = :'id';
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default');

---------------------------------------------------------------- running, then completed
-- a handler that completes before noticing the cancel ends completed with its result
select pgconductor.invoke('job', '{"n": 7}') as id \gset
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.cancel(:'id') as cancelled;
select pgconductor.report('00000000-0000-0000-0000-000000000001',
    jsonb_build_array(jsonb_build_object('id', :'id'::uuid, 'run', :run, 'outcome', 'completed',
                                         'result', '"done"'::jsonb))) as applied;
select status, result, cancel_reason from pgconductor.executions where id = :'id';

---------------------------------------------------------------- heartbeat and bad input
-- a heartbeat from an unknown worker returns null (it must register again)
select pgconductor.heartbeat('00000000-0000-0000-0000-0000000000ff') is null as unknown_worker;
-- a heartbeat moves the worker's last_seen_at to now
select pgconductor.set_fake_time('2026-01-01 02:00:00+00');
select pgconductor.heartbeat('00000000-0000-0000-0000-000000000001') as to_cancel;
select last_seen_at = pgconductor.now() as seen_now from pgconductor._workers
where id = '00000000-0000-0000-0000-000000000001';
-- a null id is invalid input (PGC01)
select pgconductor.cancel(null);
