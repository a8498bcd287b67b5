-- save_step: a step result of a held running execution is saved once (first save wins),
-- comes back with the next claim, and reports a requested cancellation.
\i ../tests/sql/include/reset.sql
select pgconductor.set_fake_time('2030-01-01 00:00:00+00');
select count(pgconductor.register_worker(w.id, 'w', '[{"name": "s", "max_attempts": 3}]', 2000000000))
from (values ('00000000-0000-0000-0000-000000000001'::uuid), ('00000000-0000-0000-0000-000000000002'::uuid)) w(id);
select pgconductor.invoke('s') as id \gset
select attempt, run, steps is null as no_steps_yet from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select :'no_steps_yet' as no_steps_yet;
-- the first save of a name wins
select pgconductor.save_step('00000000-0000-0000-0000-000000000001', :'id', :run, 'charge', '{"amount": 42}');
select pgconductor.save_step('00000000-0000-0000-0000-000000000001', :'id', :run, 'charge', '{"amount": 1}');
-- another worker (or another attempt) holds nothing: nothing is saved
select pgconductor.save_step('00000000-0000-0000-0000-000000000002', :'id', :run, 'other', 'null');
select pgconductor.save_step('00000000-0000-0000-0000-000000000001', :'id', :run + 1, 'other', 'null');
select count(*) as steps from pgconductor._steps;
-- a release keeps the steps; the next claim returns them
select pgconductor.report('00000000-0000-0000-0000-000000000001',
    jsonb_build_array(jsonb_build_object('id', :'id'::uuid, 'run', :run, 'outcome', 'released')));
select attempt, run, steps from pgconductor.claim('00000000-0000-0000-0000-000000000002', 'default');
-- a requested cancellation is reported to the saving worker
select pgconductor.cancel(:'id', 'stop');
select pgconductor.save_step('00000000-0000-0000-0000-000000000002', :'id', 2, 'next', '[1, 2]') ->> 'cancel_reason' as cancel_reason;
-- a bad name is refused
select pgconductor.save_step('00000000-0000-0000-0000-000000000002', :'id', 2, '', 'null');
-- save_steps: many in one call, answers in item order; a bad item saves nothing
select pgconductor.invoke('s') as id2 \gset
select run as run2 from pgconductor.claim('00000000-0000-0000-0000-000000000002', 'default') \gset
select pgconductor.save_steps('00000000-0000-0000-0000-000000000002', jsonb_build_array(
    jsonb_build_object('id', :'id2', 'run', :run2, 'name', 'a', 'result', '[1]'::jsonb),
    jsonb_build_object('id', :'id2', 'run', :run2, 'name', 'next', 'result', '"again"'::jsonb),
    jsonb_build_object('id', :'id', 'run', 2, 'name', 'next', 'result', '"mine"'::jsonb),
    jsonb_build_object('id', :'id2', 'run', :run2 + 1, 'name', 'b', 'result', 'null'::jsonb)));
select pgconductor.save_steps('00000000-0000-0000-0000-000000000002', jsonb_build_array(
    jsonb_build_object('id', :'id2', 'run', :run2, 'name', 'c'),
    jsonb_build_object('id', :'id2', 'run', :run2, 'name', '')));
select pgconductor.save_steps('00000000-0000-0000-0000-000000000002', '[{"run": 1, "name": "no id"}]');
select pgconductor.save_steps('00000000-0000-0000-0000-000000000002',
    jsonb_build_array(jsonb_build_object('id', :'id2', 'run', 2147483648, 'name', 'too far')));
select pgconductor.save_steps('00000000-0000-0000-0000-000000000002', '{}');
select name, result from pgconductor._steps where execution_id = :'id2' order by name;
select pgconductor.save_steps('00000000-0000-0000-0000-000000000002', '[]');
-- retention takes the steps with the execution
delete from pgconductor._executions where id = :'id';
select count(*) as steps_left from pgconductor._steps where execution_id = :'id';

-- a sleep report: waiting until now + seconds, attempt not counted, the sleep saved as a step;
-- a claim after the wake-up time hands it out again with that step
select pgconductor.invoke('s') as id \gset
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.report('00000000-0000-0000-0000-000000000001', jsonb_build_array(jsonb_build_object(
    'id', :'id'::uuid, 'run', :run, 'outcome', 'sleep', 'step', 'nap', 'seconds', 3600)));
select status, attempts, run_at = pgconductor.now() + interval '1 hour' as wakes_in_an_hour, worker_id is null as free
from pgconductor.executions where id = :'id';
select count(*) as claimed_too_early from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default');
select pgconductor.set_fake_time('2030-01-01 01:00:00+00');
select attempt, steps ? 'nap' as has_nap_step from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default');
-- a sleep report needs a step name and non-negative seconds
select pgconductor.report('00000000-0000-0000-0000-000000000001', '[{"id": "00000000-0000-0000-0000-000000000009", "run": 1, "outcome": "sleep", "seconds": 5}]');
select pgconductor.report('00000000-0000-0000-0000-000000000001', '[{"id": "00000000-0000-0000-0000-000000000009", "run": 1, "outcome": "sleep", "step": "a", "seconds": -5}]');
-- a sleep keeps the error of an earlier failed attempt
truncate pgconductor._executions cascade;
select pgconductor.invoke('s') as id \gset
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.report('00000000-0000-0000-0000-000000000001', jsonb_build_array(jsonb_build_object(
    'id', :'id'::uuid, 'run', :run, 'outcome', 'failed', 'error', '{"type": "E", "message": "first try"}'::jsonb)));
select pgconductor.set_fake_time('2030-01-01 02:00:00+00');
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.report('00000000-0000-0000-0000-000000000001', jsonb_build_array(jsonb_build_object(
    'id', :'id'::uuid, 'run', :run, 'outcome', 'sleep', 'step', 'nap', 'seconds', 60)));
select status, attempts, error ->> 'message' as kept_error from pgconductor.executions where id = :'id';
-- a debounced execution that woke from a sleep is not joined by a new debounce call
truncate pgconductor._executions cascade;
select pgconductor.invoke('d', '{"n": 1}', debounce_seconds => 1) as id \gset
select pgconductor.set_fake_time('2030-01-01 02:00:01+00');
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.report('00000000-0000-0000-0000-000000000001', jsonb_build_array(jsonb_build_object(
    'id', :'id'::uuid, 'run', :run, 'outcome', 'sleep', 'step', 'nap', 'seconds', 0)));
select count(*) from pgconductor.claim('00000000-0000-0000-0000-000000000002', 'default', array['x'], 1);
select status from pgconductor.executions where id = :'id';
select pgconductor.invoke('d', '{"n": 2}', debounce_seconds => 1) <> :'id' as new_burst;
