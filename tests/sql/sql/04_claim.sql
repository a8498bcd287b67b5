-- pgconductor.claim: hands out ready executions of one queue in the order
-- priority desc, run_at, insertion order; each becomes running with one attempt counted.
\i ../tests/sql/include/reset.sql
-- claiming workers hold live leases (claim refuses unknown or expired workers)
select count(pgconductor.register_worker(w.id, 'w', '[]', 2000000000))
from (values ('00000000-0000-0000-0000-000000000001'::uuid), ('00000000-0000-0000-0000-000000000002'::uuid)) w(id);
select pgconductor.set_fake_time('2026-01-01 00:00:00+00');
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w1',
    '[{"name": "a"}, {"name": "b"}, {"name": "c", "queue": "other"}]', 2000000000);

-- eight ready executions whose payload names their expected claim position
select pgconductor.invoke('a', '{"pos": 6}', priority => 0, run_at => '2025-12-31 23:59:00+00') is not null as ok; -- older run_at than pos 7
select pgconductor.invoke('a', '{"pos": 4}', priority => 1) is not null as ok;
select pgconductor.invoke('b', '{"pos": 1}', priority => 10) is not null as ok;
select pgconductor.invoke('a', '{"pos": 5}', priority => 1) is not null as ok;                                      -- ties pos 4: inserted after
select pgconductor.invoke('a', '{"pos": 7}', priority => 0) is not null as ok;
select pgconductor.invoke('a', '{"pos": 2}', priority => 5, run_at => '2025-12-31 00:00:00+00') is not null as ok; -- past run_at: ready at once
select pgconductor.invoke('b', '{"pos": 3}', priority => 5) is not null as ok;                                      -- same priority, later run_at than pos 2
-- not ready: run_at in the future
select pgconductor.invoke('a', '{"pos": "future"}', priority => 100, run_at => '2026-01-01 00:05:00+00') is not null as ok;
-- another queue
select pgconductor.invoke('c', '{"pos": "other"}', priority => 100) is not null as ok;
-- a negative priority runs after the default 0
select pgconductor.invoke('a', '{"pos": 8}', priority => -1, run_at => '2025-01-01 00:00:00+00') is not null as ok;

-- claim rows come back in claim order: priority desc, then run_at, then insertion order;
-- the future one and the other queue's are not claimed
select payload ->> 'pos' as pos, task_name, attempt, max_attempts, event_name, steps
from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', p_limit => 100);

-- claimed rows are running, held by the worker, attempts 1, started now
select payload ->> 'pos' as pos, status, attempts, worker_id,
       started_at = '2026-01-01 00:00:00+00' as started_now
from pgconductor.executions where status = 'running' order by payload ->> 'pos';

-- a second claim (even by another worker) does not return them: nothing ready is left
select count(*) as claimed_again from pgconductor.claim('00000000-0000-0000-0000-000000000002', 'default', p_limit => 100);

-- the future execution is not claimed one second before its run_at ...
select pgconductor.set_fake_time('2026-01-01 00:04:59+00');
select count(*) as too_early from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default');
-- ... and is claimed once the clock reaches it
select pgconductor.set_fake_time('2026-01-01 00:05:00+00');
select payload ->> 'pos' as pos from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default');

-- the other queue is claimed only by naming it
select payload ->> 'pos' as pos, task_name from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'other');

---------------------------------------------------------------- limit and task filter
truncate pgconductor._executions cascade;
-- four of task a, then two of task b
select pgconductor.invoke('a', '{"n": 1}') is not null as ok;
select pgconductor.invoke('a', '{"n": 2}') is not null as ok;
select pgconductor.invoke('a', '{"n": 3}') is not null as ok;
select pgconductor.invoke('a', '{"n": 4}') is not null as ok;
select pgconductor.invoke('b', '{"n": 5}') is not null as ok;
select pgconductor.invoke('b', '{"n": 6}') is not null as ok;

-- the default limit is one (a1)
select payload from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default');
-- p_limit caps how many are claimed (a2, a3)
select payload from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', p_limit => 2);
-- p_task_names claims only those tasks: both b's, although a4 is older
select task_name, count(*) as claimed
from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', array['b'], 10)
group by task_name;
select task_name, status, count(*) from pgconductor.executions group by 1, 2 order by 1, 2;
-- a task list that matches nothing claims nothing
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', array['zzz'], 10);
-- an empty queue claims nothing
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'empty', null, 10);
-- p_limit 0 claims nothing
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', null, 0);

---------------------------------------------------------------- steps
-- stored steps come back with a claimed execution as one JSON object (null when none)
truncate pgconductor._executions cascade;
select pgconductor.invoke('a', '{"with": "steps"}') as step_id \gset
insert into pgconductor._steps (execution_id, name, result, created_at)
values (:'step_id', 'fetch', '{"rows": 3}', pgconductor.now()), (:'step_id', 'send', 'true', pgconductor.now());
select id = :'step_id' as same_id, steps
from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default');
