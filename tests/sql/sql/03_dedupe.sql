-- dedupe_key (per task and queue) is an idempotency key, SPEC §3:
-- pending -> replaced, same id; running -> a new pending successor, itself
-- replaced while pending; completed/failed/cancelled -> existing id, nothing queued.
\i ../tests/sql/include/reset.sql
-- claiming workers hold live leases (claim refuses unknown or expired workers)
select count(pgconductor.register_worker(w.id, 'w', '[]', 2000000000))
from (values ('00000000-0000-0000-0000-000000000001'::uuid), ('00000000-0000-0000-0000-000000000002'::uuid)) w(id);
select pgconductor.set_fake_time('2026-01-01 00:00:00+00');

---------------------------------------------------------------- pending
-- the first call with a key queues one pending execution
select pgconductor.invoke('sync', '{"v": 1}', dedupe_key => 'k1', priority => 1,
                          run_at => '2026-01-01 01:00:00+00') as first_id \gset
select status, payload, priority, run_at, dedupe_key from pgconductor.executions where id = :'first_id';

-- a second call while it is pending returns the same id ...
select pgconductor.invoke('sync', '{"v": 2}', dedupe_key => 'k1', priority => 9,
                          run_at => '2026-01-01 02:00:00+00') = :'first_id' as same_id;
-- ... and replaced its payload, priority and run_at; still one row
select status, payload, priority, run_at from pgconductor.executions where id = :'first_id';
select count(*) as rows from pgconductor._executions where dedupe_key = 'k1';

-- a call without run_at or priority replaces them with the defaults (now, 0)
select pgconductor.invoke('sync', '{"v": 3}', dedupe_key => 'k1') = :'first_id' as same_id;
select payload, priority, run_at from pgconductor.executions where id = :'first_id';

-- the key is scoped per task: another task with the same key gets its own execution
select pgconductor.invoke('other_task', '{"v": 1}', dedupe_key => 'k1') <> :'first_id' as other_task_new_id;
-- ... and per queue: the same task in another queue gets its own execution
select pgconductor.invoke('sync', '{"v": 1}', queue => 'other_queue', dedupe_key => 'k1') <> :'first_id' as other_queue_new_id;
select task_name, queue, payload from pgconductor.executions where dedupe_key = 'k1' order by task_name, queue;

-- a call without a key never touches keyed executions
select pgconductor.invoke('sync', '{"v": "nokey"}') <> :'first_id' as new_id;
select payload from pgconductor.executions where id = :'first_id';

---------------------------------------------------------------- running
truncate pgconductor._executions cascade;
select pgconductor.invoke('sync', '{"v": 1}', dedupe_key => 'run') as run_id \gset
select id = :'run_id' as claimed_it
from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', array['sync'], 1);

-- while it is running, a call queues a new pending execution and returns its id
select pgconductor.invoke('sync', '{"v": 2}', dedupe_key => 'run', priority => 3) as next_id \gset
select :'next_id' <> :'run_id' as new_id;
-- the running one is left alone
select status, payload, priority from pgconductor.executions where id = :'run_id';
select status, payload, priority from pgconductor.executions where id = :'next_id';

-- a second call while that successor is pending replaces it (same id, no third row)
select pgconductor.invoke('sync', '{"v": 3}', dedupe_key => 'run') = :'next_id' as same_successor;
select status, payload from pgconductor.executions where dedupe_key = 'run' order by created_at, status desc;
select count(*) as rows from pgconductor._executions where dedupe_key = 'run';

---------------------------------------------------------------- completed
select pgconductor.report('00000000-0000-0000-0000-000000000001',
    jsonb_build_array(jsonb_build_object('id', :'run_id'::uuid, 'run', 1, 'outcome', 'completed'))) as applied;
-- the successor is still pending, so a call replaces it ...
select pgconductor.invoke('sync', '{"v": 4}', dedupe_key => 'run') = :'next_id' as still_successor;

-- ... and once every execution with the key is finished, a call returns the
-- newest finished one and queues nothing
truncate pgconductor._executions cascade;
select pgconductor.invoke('sync', '{"v": 1}', dedupe_key => 'done') as done_id \gset
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default');
select pgconductor.report('00000000-0000-0000-0000-000000000001',
    jsonb_build_array(jsonb_build_object('id', :'done_id'::uuid, 'run', 1, 'outcome', 'completed',
                                         'result', '{"ok": true}'::jsonb))) as applied;
select pgconductor.invoke('sync', '{"v": 2}', dedupe_key => 'done') = :'done_id' as existing_id;
select status, payload, result from pgconductor.executions where dedupe_key = 'done';
select count(*) as rows from pgconductor._executions where dedupe_key = 'done';

---------------------------------------------------------------- failed
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w1',
    '[{"name": "once", "max_attempts": 1}]', 2000000000);
select pgconductor.invoke('once', '{"v": 1}', dedupe_key => 'f') as failed_id \gset
select count(*) as claimed from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', array['once']);
select pgconductor.report('00000000-0000-0000-0000-000000000001',
    jsonb_build_array(jsonb_build_object('id', :'failed_id'::uuid, 'run', 1, 'outcome', 'failed',
                                         'error', '{"type": "ValueError", "message": "boom"}'::jsonb))) as applied;
select status from pgconductor.executions where id = :'failed_id';
-- a failed execution with the key: its id comes back, nothing is queued
select pgconductor.invoke('once', '{"v": 2}', dedupe_key => 'f') = :'failed_id' as existing_id;
select count(*) as rows from pgconductor._executions where dedupe_key = 'f';

---------------------------------------------------------------- cancelled
select pgconductor.invoke('sync', '{"v": 1}', dedupe_key => 'c') as cancelled_id \gset
select pgconductor.cancel(:'cancelled_id') as cancelled;
-- a cancelled execution with the key: its id comes back, nothing is queued
select pgconductor.invoke('sync', '{"v": 2}', dedupe_key => 'c') = :'cancelled_id' as existing_id;
select status, payload from pgconductor.executions where dedupe_key = 'c';

---------------------------------------------------------------- gone
-- once retention has removed the execution, the key is free again
delete from pgconductor._executions where id = :'cancelled_id';
select pgconductor.invoke('sync', '{"v": 3}', dedupe_key => 'c') <> :'cancelled_id' as new_id;
select status, payload from pgconductor.executions where dedupe_key = 'c';

---------------------------------------------------------------- invoke_many
truncate pgconductor._executions cascade;

-- ids come back in item order (one per item), each the id of that item's row
select array_agg(id order by n) as many_ids
from pgconductor.invoke_many('bulk', '[{"payload": {"n": 1}}, {"payload": {"n": 2}},
                                       {"payload": {"n": 3}, "priority": 2}, {"payload": {"n": 4}}]')
     with ordinality as x(id, n) \gset
select bool_and((e.payload ->> 'n')::int = x.n) as ids_in_item_order, count(*) as items
from unnest(:'many_ids'::uuid[]) with ordinality x(id, n)
join pgconductor._executions e on e.id = x.id;

-- repeated keys collapse to the last item: one row with the last payload,
-- and the same id for every item with that key
select array_agg(id order by n) as keyed_ids
from pgconductor.invoke_many('bulk', '[{"payload": {"n": 1}, "dedupe_key": "a"},
                                       {"payload": {"n": 2}},
                                       {"payload": {"n": 3}, "dedupe_key": "b"},
                                       {"payload": {"n": 4}, "dedupe_key": "a", "priority": 4}]')
     with ordinality as x(id, n) \gset
select cardinality(:'keyed_ids'::uuid[]) as ids,
       (:'keyed_ids'::uuid[])[1] = (:'keyed_ids'::uuid[])[4] as a_same_id,
       cardinality(array(select distinct unnest(:'keyed_ids'::uuid[]))) as distinct_ids;
select dedupe_key, payload, priority from pgconductor.executions
where id = any (:'keyed_ids'::uuid[]) order by payload ->> 'n';

-- a key that already has a pending execution replaces it and returns its id
select id = (:'keyed_ids'::uuid[])[3] as b_same_id
from pgconductor.invoke_many('bulk', '[{"payload": {"n": 5}, "dedupe_key": "b"}]') as x(id);
select payload from pgconductor.executions where dedupe_key = 'b';
select count(*) as rows from pgconductor._executions where task_name = 'bulk';

-- a key whose execution is running gets one new pending successor, shared by
-- every item with that key (a has the highest priority, so it is claimed)
select id = (:'keyed_ids'::uuid[])[1] as claimed_a
from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', array['bulk'], 1);
select array_agg(id order by n) as succ_ids
from pgconductor.invoke_many('bulk', '[{"payload": {"n": 6}, "dedupe_key": "a"},
                                       {"payload": {"n": 7}, "dedupe_key": "a"}]')
     with ordinality as x(id, n) \gset
select (:'succ_ids'::uuid[])[1] = (:'succ_ids'::uuid[])[2] as same_id,
       (:'succ_ids'::uuid[])[1] <> (:'keyed_ids'::uuid[])[1] as new_id;
select status, payload from pgconductor.executions where dedupe_key = 'a' order by status desc;

-- an empty array enqueues nothing and returns no ids
select count(*) as ids from pgconductor.invoke_many('bulk', '[]');
select count(*) as rows from pgconductor._executions where task_name = 'bulk';

-- keyed and plain items of one call are inserted in item order (ties run in that order)
truncate pgconductor._executions cascade;
select count(*) from pgconductor.invoke_many('ordered',
    '[{"dedupe_key": "a", "payload": {"n": 0}}, {"payload": {"n": 1}}, {"dedupe_key": "b", "payload": {"n": 2}}, {"payload": {"n": 3}}]');
select pg_catalog.array_agg((payload ->> 'n')::int order by seq) as insertion_order
from pgconductor._executions where task_name = 'ordered';
