-- invoke_child: a child is created once per (parent, step); the parent waits (not an
-- attempt) and wakes when the child's outcome is saved as its step; timeouts, failures,
-- cancellation cascades and lease recovery.
\i ../tests/sql/include/reset.sql
select pgconductor.set_fake_time('2030-01-01 00:00:00+00');
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w',
    '[{"name": "parent"}, {"name": "child", "queue": "kids", "max_attempts": 1}]', 2000000000);

-- the parent starts a child: the child is pending in its task's queue with the parent's
-- priority, the parent waits with no worker and its attempt handed back
select pgconductor.invoke('parent', priority => 5) as parent \gset
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select r - 'child_id' as answer, (r ->> 'child_id') as child
from pgconductor.invoke_child('00000000-0000-0000-0000-000000000001', :'parent', :run, 'call',
                              'child', '{"n": 1}') r \gset
select :'answer' as answer;
select task_name, queue, status, priority, parent_id = :'parent' as of_parent, parent_step, payload
from pgconductor._executions where id = :'child';
select status, attempts, worker_id, run_at from pgconductor._executions where id = :'parent';
select run_at is null as waits_without_deadline from pgconductor.executions where id = :'parent';
-- the same call again (its answer lost with a connection) answers the same, and creates nothing
select (r ->> 'child_id') = :'child' as same_child, r - 'child_id' as answer
from pgconductor.invoke_child('00000000-0000-0000-0000-000000000001', :'parent', :run, 'call', 'child') r;
-- a call quoting another run is refused: nothing more is created
select pgconductor.invoke_child('00000000-0000-0000-0000-000000000001', :'parent', :run + 1, 'call', 'child');
select pgconductor.invoke_child('00000000-0000-0000-0000-000000000001', :'parent', :run, 'other', 'child');
-- the child completes: its result becomes the parent's step and the parent is ready
select run as child_attempt from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'kids') \gset
select pgconductor.report('00000000-0000-0000-0000-000000000001', jsonb_build_array(jsonb_build_object(
    'id', :'child', 'run', :child_attempt, 'outcome', 'completed', 'result', jsonb_build_object('v', 42))));
select status, run_at from pgconductor._executions where id = :'parent';
select name, result - 'child_id' as outcome from pgconductor._steps where execution_id = :'parent';
-- the resumed parent gets the step with its claim, and asking again returns it
select attempt, run, steps -> 'call' -> 'result' as call_result
from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select :attempt as attempt, :'call_result' as call_result;
select pgconductor.invoke_child('00000000-0000-0000-0000-000000000001', :'parent', :run, 'call', 'child')
    -> 'outcome' ->> 'status' as status;
select count(*) as children from pgconductor._executions where parent_id = :'parent';

-- a failed child (last attempt) and a timeout
select pgconductor.invoke_child('00000000-0000-0000-0000-000000000001', :'parent', :run, 'fails', 'child')
    ->> 'child_id' as failing \gset
select run as child_attempt from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'kids') \gset
select pgconductor.report('00000000-0000-0000-0000-000000000001', jsonb_build_array(jsonb_build_object(
    'id', :'failing', 'run', :child_attempt, 'outcome', 'failed',
    'error', jsonb_build_object('type', 'ValueError', 'message', 'no'))));
select result ->> 'status' as status, result -> 'error' ->> 'message' as message
from pgconductor._steps where execution_id = :'parent' and name = 'fails';
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.invoke_child('00000000-0000-0000-0000-000000000001', :'parent', :run, 'slow', 'child',
    '{}', 60000) ->> 'waiting' as waiting;
select status, run_at from pgconductor._executions where id = :'parent';
select pgconductor.set_fake_time('2030-01-01 00:01:00+00');
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.invoke_child('00000000-0000-0000-0000-000000000001', :'parent', :run, 'slow', 'child',
    '{}', 60000) -> 'outcome' ->> 'status' as status;
-- the timed-out child finishing later changes nothing for the parent
select id as slow from pgconductor._executions where parent_step = 'slow' \gset
select run as child_attempt from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'kids') \gset
select pgconductor.report('00000000-0000-0000-0000-000000000001', jsonb_build_array(jsonb_build_object(
    'id', :'slow', 'run', :child_attempt, 'outcome', 'completed', 'result', '1'::jsonb)));
select result ->> 'status' as status from pgconductor._steps where execution_id = :'parent' and name = 'slow';
select status from pgconductor._executions where id = :'parent';

-- bad input is refused and nothing is written
select pgconductor.invoke_child('00000000-0000-0000-0000-000000000001', :'parent', :run, '', 'child');
select pgconductor.invoke_child('00000000-0000-0000-0000-000000000001', :'parent', :run, 'x', 'child', '[]');
select pgconductor.invoke_child('00000000-0000-0000-0000-000000000001', :'parent', :run, 'x', 'child', '{}', 0);
select count(*) as children from pgconductor._executions where parent_id = :'parent';

-- cancelling the parent cancels its unfinished descendants: waiting, pending and running
select pgconductor.invoke_child('00000000-0000-0000-0000-000000000001', :'parent', :run, 'deep', 'parent')
    ->> 'child_id' as middle \gset
select run as middle_attempt from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.invoke_child('00000000-0000-0000-0000-000000000001', :'middle', :middle_attempt, 'leaf', 'child')
    ->> 'child_id' as leaf \gset
select run as leaf_attempt from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'kids') \gset
select task_name, status from pgconductor._executions where id in (:'parent', :'middle', :'leaf') order by seq;
select pgconductor.cancel(:'parent', 'withdrawn');
select id = :'parent' as is_parent, id = :'middle' as is_middle, id = :'leaf' as is_leaf, status, cancel_reason
from pgconductor._executions where id in (:'parent', :'middle', :'leaf') order by seq;
-- the running leaf ends cancelled when its worker reports it stopped (Cancelled raised)
select pgconductor.report('00000000-0000-0000-0000-000000000001', jsonb_build_array(jsonb_build_object(
    'id', :'leaf', 'run', :leaf_attempt, 'outcome', 'failed',
    'error', jsonb_build_object('type', 'Cancelled', 'message', 'withdrawn'))));
select status from pgconductor._executions where id = :'leaf';
-- cancelling something finished says false
select pgconductor.cancel(:'parent');

-- a child lost with its worker's lease (last attempt) fails, and its parent learns it
select pgconductor.invoke('parent') as p2 \gset
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.invoke_child('00000000-0000-0000-0000-000000000001', :'p2', :run, 'lost', 'child')
    ->> 'child_id' as lost \gset
select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'short', '[]', 1);
select count(*) from pgconductor.claim('00000000-0000-0000-0000-000000000002', 'kids');
select pgconductor.set_fake_time('2030-01-01 00:02:00+00');
select pgconductor.run_maintenance() ->> 'recovered' as recovered;
select status from pgconductor._executions where id = :'lost';
select status from pgconductor._executions where id = :'p2';
select result ->> 'status' as status, result -> 'error' ->> 'type' as type
from pgconductor._steps where execution_id = :'p2';
-- a parent that sleeps (instead of asking again) after its child's timeout is not woken by
-- the child's late outcome: only a parent waiting on that very step wakes
select pgconductor.cancel(:'p2');
select pgconductor.invoke('parent') as p3 \gset
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.invoke_child('00000000-0000-0000-0000-000000000001', :'p3', :run, 'late', 'child', '{}', 1000)
    ->> 'child_id' as late \gset
select pgconductor.set_fake_time('2030-01-01 00:03:00+00');
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.report('00000000-0000-0000-0000-000000000001', jsonb_build_array(jsonb_build_object(
    'id', :'p3', 'run', :run, 'outcome', 'sleep', 'step', 'nap', 'seconds', 3600)));
select run as child_attempt from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'kids') \gset
select pgconductor.report('00000000-0000-0000-0000-000000000001', jsonb_build_array(jsonb_build_object(
    'id', :'late', 'run', :child_attempt, 'outcome', 'completed', 'result', '1'::jsonb)));
select status, run_at from pgconductor._executions where id = :'p3';
select name, result ->> 'status' as status from pgconductor._steps where execution_id = :'p3' order by name;
-- invoke_children: many parents in one call, answers in item order; a bad item writes nothing
select pgconductor.invoke('parent') as q1 \gset
select pgconductor.invoke('parent') as q2 \gset
select count(*) from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', null, 5);
select a.ord, a.v - 'child_id' as answer, a.v ? 'child_id' as has_child_id
from pg_catalog.jsonb_array_elements(pgconductor.invoke_children('00000000-0000-0000-0000-000000000001', jsonb_build_array(
    jsonb_build_object('id', :'q1', 'run', 1, 'step', 'a', 'task_name', 'child', 'payload', '{"n": 1}'::jsonb),
    jsonb_build_object('id', :'q2', 'run', 1, 'step', 'b', 'task_name', 'child', 'timeout_ms', null),
    jsonb_build_object('id', :'q2', 'run', 9, 'step', 'c', 'task_name', 'child')))) with ordinality a(v, ord);
select e.task_name, e.status, x.parent_step, x.payload
from pgconductor._executions e join pgconductor._executions x on x.parent_id = e.id
where e.id in (:'q1', :'q2') order by x.parent_step;
select pgconductor.invoke_children('00000000-0000-0000-0000-000000000001', jsonb_build_array(
    jsonb_build_object('id', :'q1', 'run', 1, 'step', 'z', 'task_name', 'child'),
    jsonb_build_object('id', 'nope', 'run', 1, 'step', 'z', 'task_name', 'child')));
select pgconductor.invoke_children('00000000-0000-0000-0000-000000000001', '{}');
select pgconductor.invoke_children('00000000-0000-0000-0000-000000000001', '[]');
select count(*) as children_named_z from pgconductor._executions where parent_step = 'z';
select pgconductor.clear_fake_time();
