-- pgconductor.invoke: enqueue one execution with defaults from the call, the
-- registered task, or the built-in defaults (queue 'default', max_attempts 3).
\i ../tests/sql/include/reset.sql
select pgconductor.set_fake_time('2026-01-01 00:00:00+00');

-- an unregistered task with no options: queue 'default', max_attempts 3, pending,
-- run_at = created_at = now(), priority 0, payload {}, attempts 0, no key
select pgconductor.invoke('plain') is not null as has_id;
select task_name, queue, status, payload, max_attempts, attempts, priority,
       run_at = '2026-01-01 00:00:00+00' as run_at_now,
       created_at = '2026-01-01 00:00:00+00' as created_now,
       started_at is null as not_started, finished_at is null as not_finished,
       result is null as no_result, error is null as no_error,
       dedupe_key is null as no_key, event_name, parent_id is null as no_parent, batch_id is null as no_batch
from pgconductor.executions where task_name = 'plain';

-- invoke returns the id of the row it wrote
select pgconductor.invoke('returned') as returned_id \gset
select id = :'returned_id' as returned_id from pgconductor._executions where task_name = 'returned';

-- the payload is stored as given
select pgconductor.invoke('with_payload', '{"name": "Ada", "tags": [1, 2]}') is not null as has_id;
select payload from pgconductor.executions where task_name = 'with_payload';

-- a registered task's queue and max_attempts are used when the call names no queue
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w1',
    '[{"name": "registered", "queue": "emails", "max_attempts": 7}]');
select pgconductor.invoke('registered', '{"n": 1}') is not null as has_id;
select queue, max_attempts from pgconductor.executions where task_name = 'registered';

-- an explicit queue wins over the registered one; max_attempts still comes from the task
select pgconductor.invoke('registered', '{"n": 2}', queue => 'urgent') is not null as has_id;
select queue, max_attempts from pgconductor.executions
where task_name = 'registered' and payload = '{"n": 2}';

-- max_attempts is the task's registered value when it matters, not a copy:
-- registering the task again changes it for executions that already exist
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w1',
    '[{"name": "registered", "queue": "emails", "max_attempts": 2}]');
select payload, max_attempts from pgconductor.executions where task_name = 'registered' order by payload ->> 'n';

-- an explicit queue for an unregistered task; max_attempts stays 3
select pgconductor.invoke('plain', '{"n": 3}', queue => 'reports') is not null as has_id;
select queue, max_attempts from pgconductor.executions where payload = '{"n": 3}';

-- priority is stored as given (negative too); null means 0
select pgconductor.invoke('prio', '{"p": 5}', priority => 5) is not null as has_id;
select pgconductor.invoke('prio', '{"p": -2}', priority => -2) is not null as has_id;
select pgconductor.invoke('prio', '{"p": null}', priority => null) is not null as has_id;
select payload, priority from pgconductor.executions where task_name = 'prio' order by created_at, priority desc;

-- run_at is stored as given, in the future or the past; null means now()
select pgconductor.invoke('later', '{"when": "future"}', run_at => '2026-01-02 12:00:00+00') is not null as has_id;
select pgconductor.invoke('later', '{"when": "past"}', run_at => '2025-06-01 00:00:00+00') is not null as has_id;
select pgconductor.invoke('later', '{"when": "null"}', run_at => null) is not null as has_id;
select payload ->> 'when' as which, run_at from pgconductor.executions where task_name = 'later' order by run_at;

-- created_at follows the fake clock
select pgconductor.set_fake_time('2026-01-01 00:10:00+00');
select pgconductor.invoke('clocked') is not null as has_id;
select created_at, run_at from pgconductor.executions where task_name = 'clocked';

-- every call gets a new id and row when there is no dedupe key
select count(distinct id) as ids from (
    select pgconductor.invoke('many') as id from generate_series(1, 3)) x;
select count(*) as rows from pgconductor.executions where task_name = 'many';

-- insertion order is recorded (seq grows with every invoke)
select bool_and(a.seq < b.seq) as seq_increases
from pgconductor._executions a join pgconductor._executions b
  on a.task_name = 'prio' and b.task_name = 'later';

-- queue_channel names the NOTIFY channel of a queue
select pgconductor.queue_channel('emails') as channel;

