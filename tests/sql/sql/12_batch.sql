-- Batch tasks: claim hands out groups of up to `size` ready executions of one batch task
-- when `size` are ready or the oldest ready one has waited timeout_ms; p_limit counts
-- handler runs (a group is one).
\i ../tests/sql/include/reset.sql
select pgconductor.set_fake_time('2030-01-01 00:00:00+00');
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w',
    '[{"name": "rows", "batch": {"size": 3, "timeout_ms": 2000}}, {"name": "plain"}]', 2000000000);
select name, batch_size, batch_timeout_ms from pgconductor._tasks order by name;
select count(*) from pgconductor.invoke_many('rows', '[{"payload": {"n": 0}}, {"payload": {"n": 1}},
    {"payload": {"n": 2}}, {"payload": {"n": 3}}, {"payload": {"n": 4}}, {"payload": {"n": 5}}, {"payload": {"n": 6}}]');
select count(*) from pgconductor.invoke_many('plain', '[{}, {}]');

-- a claim of 2 runs: one full group of 3 and one plain execution (a batch or limited
-- task takes at most half of a claim, so a backlog of it cannot starve the others)
select task_name, batch_group, count(*), array_agg((payload ->> 'n')::int order by (payload ->> 'n')::int) as ns
from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', null, 2)
group by task_name, batch_group order by task_name, batch_group;
-- the next claim takes the second full group; the single remaining one waits for the timeout
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', array['rows'], 10);
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', array['rows'], 10);
-- 2 s after it became ready, a group of 1 is handed out
select pgconductor.set_fake_time('2030-01-01 00:00:02+00');
select task_name, batch_group, array_agg((payload ->> 'n')::int) as ns
from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', array['rows'], 10)
group by task_name, batch_group;
-- each execution of a group is reported on its own (results per execution)
select pgconductor.report('00000000-0000-0000-0000-000000000001', (
    select jsonb_agg(jsonb_build_object('id', id, 'run', claims, 'outcome', 'completed',
                                        'result', jsonb_build_object('n', payload -> 'n')))
    from pgconductor._executions where task_name = 'rows' and status = 'running'));
select status, count(*), bool_and(result -> 'n' = payload -> 'n') as own_results
from pgconductor.executions where task_name = 'rows' group by status;
-- a batch task with a concurrency limit gets groups within the free slots (timeout 0:
-- a smaller group at once)
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w',
    '[{"name": "lb", "batch": {"size": 2, "timeout_ms": 0}, "concurrency": 3}]', 2000000000);
select count(*) from (select pgconductor.invoke('lb') from generate_series(1, 6)) x;
select count(*) as claimed, count(distinct batch_group) as groups
from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', array['lb'], 10);
-- bad batch declarations are refused
select pgconductor.register_worker(gen_random_uuid(), 'w', '[{"name": "x", "batch": {"size": 0, "timeout_ms": 1}}]');
select pgconductor.register_worker(gen_random_uuid(), 'w', '[{"name": "x", "batch": {"size": 2}}]');
select pgconductor.register_worker(gen_random_uuid(), 'w', '[{"name": "x", "batch": {"size": 2, "timeout_ms": -5}}]');
