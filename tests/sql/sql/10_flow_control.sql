-- Throttle and debounce (SPEC §3), keyed by task + queue + dedupe_key (no key: the task).
\i ../tests/sql/include/reset.sql
delete from pgconductor._throttles;
select count(pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w', '[]', 2000000000));
select pgconductor.set_fake_time('2030-01-01 00:00:00+00');

---------------------------------------------------------------- throttle
-- the first call of a window queues an execution; calls inside the window return null
select pgconductor.invoke('t', '{"n": 1}', throttle_seconds => 10) is not null as first_queued;
select pgconductor.invoke('t', '{"n": 2}', throttle_seconds => 10) is null as second_throttled;
-- a key is a window of its own; the keyless window is the task's
select pgconductor.invoke('t', '{"n": 3}', dedupe_key => 'a', throttle_seconds => 10) is not null as key_a_queued;
select pgconductor.invoke('t', '{"n": 4}', dedupe_key => 'a', throttle_seconds => 10) is null as key_a_throttled;
select pgconductor.invoke('t', '{"n": 5}', dedupe_key => 'b', throttle_seconds => 10) is not null as key_b_queued;
-- first wins: the queued payloads are the first of each window
select payload, dedupe_key from pgconductor.executions where task_name = 't' order by created_at, payload;
-- 9 s later the window is still closed; at 10 s it rolls over
select pgconductor.set_fake_time('2030-01-01 00:00:09+00');
select pgconductor.invoke('t', '{"n": 6}', throttle_seconds => 10) is null as still_throttled;
select pgconductor.set_fake_time('2030-01-01 00:00:10+00');
select pgconductor.invoke('t', '{"n": 7}', throttle_seconds => 10) is not null as next_window_queued;
select count(*) as throttled_executions from pgconductor._executions where task_name = 't';
-- invoke_many applies throttle per item, in item order: one id, then nulls
select array_agg(x is not null) as queued
from pgconductor.invoke_many('bulk', '[{"payload": {"i": 1}, "throttle_seconds": 60},
    {"payload": {"i": 2}, "throttle_seconds": 60}, {"payload": {"i": 3}, "throttle_seconds": 60}]') x;
-- maintenance forgets closed windows only
select pgconductor.set_fake_time('2030-01-01 00:00:30+00');
select pgconductor.run_maintenance();
select task_name, key, window_ends_at from pgconductor._throttles order by task_name, key;

---------------------------------------------------------------- debounce
truncate pgconductor._executions cascade;
select pgconductor.set_fake_time('2030-01-01 01:00:00+00');
-- every call of a burst returns the same id; the last payload wins; run_at moves to last call + 5 s
select pgconductor.invoke('d', '{"n": 1}', debounce_seconds => 5) as d1 \gset
select pgconductor.set_fake_time('2030-01-01 01:00:03+00');
select pgconductor.invoke('d', '{"n": 2}', debounce_seconds => 5) = :'d1' as same_id;
select pgconductor.set_fake_time('2030-01-01 01:00:07+00');
select pgconductor.invoke('d', '{"n": 3}', debounce_seconds => 5) = :'d1' as same_id;
select status, payload, run_at from pgconductor.executions where task_name = 'd';
-- keys debounce separately
select pgconductor.invoke('d', '{"k": 1}', dedupe_key => 'x', debounce_seconds => 5) <> :'d1' as own_burst;
select count(*) as pending from pgconductor.executions where task_name = 'd' and status = 'pending';
-- max_wait: a steady stream (a call every 4 s, debounce 5 s) still runs 12 s after its first call
select pgconductor.set_fake_time('2030-01-01 02:00:00+00');
select pgconductor.invoke('m', '{"n": 0}', debounce_seconds => 5, debounce_max_wait_seconds => 12) as m1 \gset
select pgconductor.set_fake_time('2030-01-01 02:00:04+00');
select pgconductor.invoke('m', '{"n": 1}', debounce_seconds => 5, debounce_max_wait_seconds => 12) = :'m1' as same_id;
select pgconductor.set_fake_time('2030-01-01 02:00:08+00');
select pgconductor.invoke('m', '{"n": 2}', debounce_seconds => 5, debounce_max_wait_seconds => 12) = :'m1' as same_id;
select payload, run_at from pgconductor.executions where id = :'m1';
-- once the debounced execution runs, a new call starts a new burst (and a new execution)
select pgconductor.set_fake_time('2030-01-01 02:00:12+00');
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', array['m'], 10);
select pgconductor.invoke('m', '{"n": 3}', debounce_seconds => 5, debounce_max_wait_seconds => 12) <> :'m1' as new_burst;
select status, payload, run_at from pgconductor.executions where task_name = 'm' order by created_at;
-- invoke_many: debounced items of one key share one execution (the last payload wins)
select count(distinct x) as ids, count(*) as items
from pgconductor.invoke_many('bulk2', '[{"payload": {"i": 1}, "debounce_seconds": 5},
    {"payload": {"i": 2}, "debounce_seconds": 5}]') x;
select payload from pgconductor.executions where task_name = 'bulk2';

-- a debounced execution waiting for its retry has run already: a new call starts a new burst
truncate pgconductor._executions cascade;
select count(pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w', '[]', 2000000000));
select pgconductor.set_fake_time('2030-01-01 03:00:00+00');
select pgconductor.invoke('r', '{"n": 1}', debounce_seconds => 5) as r1 \gset
select pgconductor.set_fake_time('2030-01-01 03:00:05+00');
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', array['r'], 1) \gset
select pgconductor.report('00000000-0000-0000-0000-000000000001',
    jsonb_build_array(jsonb_build_object('id', :'r1'::uuid, 'run', :run, 'outcome', 'failed',
                                         'error', '{"message": "x"}'::jsonb)));
select pgconductor.invoke('r', '{"n": 2}', debounce_seconds => 5) <> :'r1' as new_burst;
select payload, attempts, run_at from pgconductor.executions where task_name = 'r' order by created_at;
-- throttle with run_at is refused (the window counts from the call)
select pgconductor.invoke('t', throttle_seconds => 5, run_at => '2030-01-01 04:00:00+00');
