-- Concurrency limits: at most N executions of a task run at once across all workers,
-- decided at claim; a slot frees itself on every way out of running.
\i ../tests/sql/include/reset.sql
select pgconductor.set_fake_time('2030-01-01 00:00:00+00');
select count(pgconductor.register_worker(w.id, 'w', '[{"name": "limited", "concurrency": 2}, {"name": "free"}]', 2000000000))
from (values ('00000000-0000-0000-0000-000000000001'::uuid), ('00000000-0000-0000-0000-000000000002'::uuid)) w(id);
select name, concurrency from pgconductor._tasks order by name;
select count(*) from (select pgconductor.invoke('limited', jsonb_build_object('n', g), priority => 10) from generate_series(1, 5) g) x;
select count(*) from (select pgconductor.invoke('free', jsonb_build_object('n', g)) from generate_series(1, 5) g) x;

-- one claim of 10 takes 2 limited executions (the limit) and fills the rest with free ones
select task_name, count(*) from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', null, 10)
group by task_name order by task_name;
-- another worker gets no limited execution while both slots are taken
select count(*) as limited_claimed from pgconductor.claim('00000000-0000-0000-0000-000000000002', 'default', array['limited'], 10);
-- a completed report frees one slot
select pgconductor.report('00000000-0000-0000-0000-000000000001', (
    select jsonb_agg(jsonb_build_object('id', id, 'run', claims, 'outcome', 'completed'))
    from (select id, claims from pgconductor._executions where task_name = 'limited' and status = 'running' limit 1) r));
select count(*) as limited_claimed from pgconductor.claim('00000000-0000-0000-0000-000000000002', 'default', array['limited'], 10);
-- a cancel of a running one frees a slot when its worker hands it back (release report)
select pgconductor.cancel(id) from pgconductor._executions
where task_name = 'limited' and status = 'running' and worker_id = '00000000-0000-0000-0000-000000000002';
select pgconductor.report('00000000-0000-0000-0000-000000000002', (
    select jsonb_agg(jsonb_build_object('id', id, 'run', claims, 'outcome', 'released'))
    from pgconductor._executions where status = 'running' and worker_id = '00000000-0000-0000-0000-000000000002'));
select count(*) as limited_claimed from pgconductor.claim('00000000-0000-0000-0000-000000000002', 'default', array['limited'], 10);
-- lease recovery frees the slots of a dead worker
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w', '[{"name": "limited", "concurrency": 2}, {"name": "free"}]', 60);
select pgconductor.set_fake_time('2030-01-01 00:01:01+00');
select pgconductor.heartbeat('00000000-0000-0000-0000-000000000002') is not null as alive;
select pgconductor.run_maintenance() ->> 'recovered' as recovered;
select count(*) as running_limited from pgconductor._executions where task_name = 'limited' and status = 'running';
select count(*) as limited_claimed from pgconductor.claim('00000000-0000-0000-0000-000000000002', 'default', array['limited'], 10);
-- never more than the limit running, whatever happened
select count(*) <= 2 as within_limit from pgconductor._executions where task_name = 'limited' and status = 'running';
-- bad limits are refused
select pgconductor.register_worker(gen_random_uuid(), 'w', '[{"name": "x", "concurrency": 0}]');
select pgconductor.register_worker(gen_random_uuid(), 'w', '[{"name": "x", "concurrency": 1.5}]');

-- priority order holds for small claims: a claim of one run takes a higher-priority
-- execution of another task before a limited task's lower-priority backlog
truncate pgconductor._executions cascade;
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w', '[{"name": "limited", "concurrency": 100}, {"name": "free"}]', 2000000000);
select count(*) from (select pgconductor.invoke('limited', jsonb_build_object('n', g)) from generate_series(1, 5) g) x;
select pgconductor.invoke('free', '{"urgent": true}', priority => 10) is not null as queued;
select task_name from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', null, 1);
select task_name from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', null, 1);
