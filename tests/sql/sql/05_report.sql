-- pgconductor.report: a worker's outcomes. completed stores the result; failed
-- retries with backoff 15 s, 30 s, 60 s, 60 s... until max_attempts; released
-- goes back to pending without counting the attempt; stale reports are ignored.
\i ../tests/sql/include/reset.sql
-- claiming workers hold live leases (claim refuses unknown or expired workers)
select count(pgconductor.register_worker(w.id, 'w', '[]', 2000000000))
from (values ('00000000-0000-0000-0000-000000000001'::uuid), ('00000000-0000-0000-0000-000000000002'::uuid)) w(id);
select pgconductor.set_fake_time('2026-01-01 00:00:00+00');
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w1',
    '[{"name": "ok"}, {"name": "gone", "remove_on_complete": 0}, {"name": "flaky", "max_attempts": 5}]', 2000000000);

-- one report object for the execution :id at :attempt
\set rep 'jsonb_build_array(jsonb_build_object(''id'', :''id''::uuid, ''run'', :run, ''outcome'', :''outcome'', ''result'', :''result''::jsonb, ''error'', :''error''::jsonb))'

---------------------------------------------------------------- completed
select pgconductor.invoke('ok', '{"n": 1}') as id \gset
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.set_fake_time('2026-01-01 00:00:02+00');
\set outcome completed
\set result '{"sum": 3}'
\set error null
-- one report applied
select pgconductor.report('00000000-0000-0000-0000-000000000001', :rep) as applied;
-- completed: result stored, finished now, expires after the default 7 days, no holder
select status, result, error, attempts, worker_id,
       finished_at = '2026-01-01 00:00:02+00' as finished_now,
       expires_at - finished_at as kept_for
from pgconductor.executions where id = :'id';

-- the same report again is stale (no longer running): ignored
select pgconductor.report('00000000-0000-0000-0000-000000000001', :rep) as applied;
select status from pgconductor.executions where id = :'id';

-- remove_on_complete 0: the row is deleted as soon as it completes
select pgconductor.invoke('gone') as id \gset
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.report('00000000-0000-0000-0000-000000000001', :rep) as applied;
select count(*) as rows_left from pgconductor._executions where id = :'id';
select count(*) as found from pgconductor.get_execution(:'id');

---------------------------------------------------------------- failed, backoff
select pgconductor.set_fake_time('2026-01-01 00:00:00+00');
select pgconductor.invoke('flaky', '{"n": 2}') as id \gset
\set outcome failed
\set result null
\set error '{"type": "ValueError", "message": "boom", "traceback": "..."}'

-- attempt 1 fails at 00:00:00: pending again, due 15 s later, error kept, attempt counted
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select :attempt as attempt;
select pgconductor.report('00000000-0000-0000-0000-000000000001', :rep) as applied;
select status, attempts, run_at, error ->> 'message' as message, worker_id, finished_at
from pgconductor.executions where id = :'id';

-- not claimable before its run_at ...
select pgconductor.set_fake_time('2026-01-01 00:00:14+00');
select count(*) as too_early from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default');
-- ... attempt 2 at 00:00:15 fails: due 30 s later
select pgconductor.set_fake_time('2026-01-01 00:00:15+00');
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select :attempt as attempt;
select pgconductor.report('00000000-0000-0000-0000-000000000001', :rep) as applied;
select status, attempts, run_at - pgconductor.now() as backoff from pgconductor.executions where id = :'id';

-- attempt 3 fails: due 60 s later
select pgconductor.set_fake_time('2026-01-01 00:00:45+00');
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select :attempt as attempt;
select pgconductor.report('00000000-0000-0000-0000-000000000001', :rep) as applied;
select status, attempts, run_at - pgconductor.now() as backoff from pgconductor.executions where id = :'id';

-- attempt 4 fails: the backoff stays at 60 s
select pgconductor.set_fake_time('2026-01-01 00:01:45+00');
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select :attempt as attempt;
select pgconductor.report('00000000-0000-0000-0000-000000000001', :rep) as applied;
select status, attempts, run_at - pgconductor.now() as backoff from pgconductor.executions where id = :'id';

-- attempt 5 = max_attempts fails: failed for good, error kept, expires after the default 30 days
select pgconductor.set_fake_time('2026-01-01 00:02:45+00');
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select :attempt as attempt;
\set error '{"type": "ValueError", "message": "boom 5", "traceback": "..."}'
select pgconductor.report('00000000-0000-0000-0000-000000000001', :rep) as applied;
select status, attempts, max_attempts, error, worker_id,
       finished_at = pgconductor.now() as finished_now, expires_at - finished_at as kept_for
from pgconductor.executions where id = :'id';
-- and it is never claimed again
select pgconductor.set_fake_time('2026-01-02 00:00:00+00');
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default');

-- an unregistered task fails after the default 3 attempts
select pgconductor.invoke('unregistered') as id \gset
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.report('00000000-0000-0000-0000-000000000001', :rep) as applied;
select pgconductor.set_fake_time('2026-01-02 00:00:15+00');
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.report('00000000-0000-0000-0000-000000000001', :rep) as applied;
select pgconductor.set_fake_time('2026-01-02 00:00:45+00');
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.report('00000000-0000-0000-0000-000000000001', :rep) as applied;
select status, attempts, max_attempts from pgconductor.executions where id = :'id';

---------------------------------------------------------------- released
select pgconductor.set_fake_time('2026-01-03 00:00:00+00');
select pgconductor.invoke('flaky', '{"n": 3}') as id \gset
\set error '{"type": "KeyError", "message": "first failure"}'
-- attempt 1 fails, attempt 2 is then released (e.g. worker shutdown)
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.report('00000000-0000-0000-0000-000000000001', :rep) as applied;
select pgconductor.set_fake_time('2026-01-03 00:01:00+00');
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select :attempt as attempt;
\set outcome released
\set error null
select pgconductor.report('00000000-0000-0000-0000-000000000001', :rep) as applied;
-- released: pending again at once, the released attempt not counted, the earlier error kept
select status, attempts, run_at = pgconductor.now() as due_now, error ->> 'message' as message,
       worker_id, finished_at
from pgconductor.executions where id = :'id';
-- the next claim is attempt 2 again, but a new run (the run token never goes back): a late
-- copy of the released run's report, sent by the same worker, is ignored
select attempt, run as new_run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select :attempt as attempt, :new_run as run;
select pgconductor.report('00000000-0000-0000-0000-000000000001', :rep) as applied_late_copy;
select status, attempts from pgconductor.executions where id = :'id';

---------------------------------------------------------------- stale reports
select pgconductor.invoke('ok', '{"n": 4}') as id \gset
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
\set outcome completed
\set result '{"stale": true}'
-- a report for another run is ignored
select pgconductor.report('00000000-0000-0000-0000-000000000001',
    jsonb_build_array(jsonb_build_object('id', :'id'::uuid, 'run', 2, 'outcome', 'completed'))) as applied;
-- a report from a worker that does not hold the execution is ignored
select pgconductor.report('00000000-0000-0000-0000-000000000002', :rep) as applied;
-- a report for an unknown execution is ignored
select pgconductor.report('00000000-0000-0000-0000-000000000001',
    '[{"id": "00000000-0000-0000-0000-0000000000ff", "run": 1, "outcome": "completed"}]') as applied;
-- the execution is still running, untouched
select status, attempts, result from pgconductor.executions where id = :'id';
-- an empty report list applies nothing
select pgconductor.report('00000000-0000-0000-0000-000000000001', '[]') as applied;

---------------------------------------------------------------- many at once
-- one call applies several outcomes and counts only the valid ones
select pgconductor.invoke('ok', '{"n": 5}') as id2 \gset
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', p_limit => 10);
select pgconductor.report('00000000-0000-0000-0000-000000000001', jsonb_build_array(
    jsonb_build_object('id', :'id'::uuid, 'run', 1, 'outcome', 'completed', 'result', 1),
    jsonb_build_object('id', :'id2'::uuid, 'run', 1, 'outcome', 'completed', 'result', 2),
    jsonb_build_object('id', :'id2'::uuid, 'run', 9, 'outcome', 'failed'))) as applied;
select payload ->> 'n' as n, status, result from pgconductor.executions
where id in (:'id', :'id2') order by 1;

---------------------------------------------------------------- bad input
-- malformed reports raise PGC01 and apply nothing
select pgconductor.invoke('ok', '{"n": 6}') as id \gset
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.report('00000000-0000-0000-0000-000000000001', null);
select pgconductor.report('00000000-0000-0000-0000-000000000001', '{"id": 1}');
-- the first bad element is named even when valid ones precede it
select pgconductor.report('00000000-0000-0000-0000-000000000001', jsonb_build_array(
    jsonb_build_object('id', :'id'::uuid, 'run', :run, 'outcome', 'completed'),
    jsonb_build_object('id', :'id'::uuid, 'run', :run, 'outcome', 'done')));
select pgconductor.report('00000000-0000-0000-0000-000000000001', jsonb_build_array(
    jsonb_build_object('id', :'id'::uuid, 'run', :run, 'outcome', 'completed'),
    jsonb_build_object('id', :'id'::uuid, 'run', '1', 'outcome', 'completed')));
do $$
begin
    perform pgconductor.report('00000000-0000-0000-0000-000000000001', '[{"run": 1, "outcome": "completed"}]');
    raise notice 'accepted';
exception when sqlstate 'PGC01' then
    raise notice 'report refused with PGC01';
end;
$$;
-- the valid report in the refused call was not applied
select status from pgconductor.executions where id = :'id';

---------------------------------------------------------------- keep forever
-- a task that keeps finished rows forever (remove_on_complete false) still completes
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w1',
    '[{"name": "kept", "remove_on_complete": false, "remove_on_fail": false, "max_attempts": 1}]', 2000000000);
select pgconductor.invoke('kept', '{"n": 1}') as id \gset
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
\set outcome completed
\set result '{"kept": true}'
select pgconductor.report('00000000-0000-0000-0000-000000000001', :rep) as applied;
-- completed, never expires
select status, result, expires_at is null as forever from pgconductor.executions where id = :'id';
-- a final failure of such a task ends failed, also kept forever
select pgconductor.invoke('kept', '{"n": 2}') as id \gset
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
\set outcome failed
\set error '{"type": "E", "message": "x"}'
select pgconductor.report('00000000-0000-0000-0000-000000000001', :rep) as applied;
select status, error ->> 'type' as type, expires_at is null as forever from pgconductor.executions where id = :'id';
