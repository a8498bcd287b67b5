-- Bad input: every invalid argument of the public functions raises SQLSTATE
-- PGC01 with a message naming the input and a detail showing its value, and
-- writes nothing.
\i ../tests/sql/include/reset.sql
-- claiming workers hold live leases (claim refuses unknown or expired workers)
select count(pgconductor.register_worker(w.id, 'w', '[]', 2000000000))
from (values ('00000000-0000-0000-0000-000000000001'::uuid), ('00000000-0000-0000-0000-000000000002'::uuid)) w(id);
select pgconductor.set_fake_time('2026-01-01 00:00:00+00');

-- error_of(sql): runs sql and returns the SQLSTATE, message and detail it raised
-- ('ok' when it raised nothing)
create function pg_temp.error_of(p_sql text, out code text, out message text, out detail text)
language plpgsql as $$
begin
    execute p_sql;
    code := 'ok';
exception when others then
    get stacked diagnostics code = returned_sqlstate, message = message_text, detail = pg_exception_detail;
end;
$$;

-- a fingerprint of everything the functions could write
create function pg_temp.written() returns text language sql as $$
    select format('executions=%s tasks=%s workers=%s queues=%s steps=%s',
        (select count(*) from pgconductor._executions), (select count(*) from pgconductor._tasks),
        (select count(*) from pgconductor._workers), (select count(*) from pgconductor._queues),
        (select count(*) from pgconductor._steps))
$$;

-- some existing state that bad calls must leave alone
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w1', '[{"name": "job"}]', 2000000000);
select pgconductor.invoke('job', '{"n": 1}', dedupe_key => 'k') is not null as ok;
select pg_temp.written() as before \gset
select :'before' as before;

-- a plain call shows the message (VERBOSITY terse)
select pgconductor.invoke(null);
-- a DO block can catch it by its SQLSTATE
do $$
begin
    perform pgconductor.invoke('');
    raise notice 'accepted';
exception when sqlstate 'PGC01' then
    raise notice 'caught PGC01';
end;
$$;

---------------------------------------------------------------- invoke
-- task name: null, empty, blank, longer than 200 characters
select * from pg_temp.error_of($$select pgconductor.invoke(null)$$);
select * from pg_temp.error_of($$select pgconductor.invoke('')$$);
select * from pg_temp.error_of($$select pgconductor.invoke('   ')$$);
select code, message from pg_temp.error_of($$select pgconductor.invoke(repeat('x', 201))$$);
-- 200 characters is fine
select code from pg_temp.error_of($$select pgconductor.invoke(repeat('x', 200))$$);
delete from pgconductor._executions where task_name = repeat('x', 200);
-- queue: empty, longer than 48 characters
select * from pg_temp.error_of($$select pgconductor.invoke('job', queue => '')$$);
select code, message from pg_temp.error_of($$select pgconductor.invoke('job', queue => repeat('q', 49))$$);
-- payload: SQL null, JSON null, array, string, number
select * from pg_temp.error_of($$select pgconductor.invoke('job', null)$$);
select * from pg_temp.error_of($$select pgconductor.invoke('job', 'null')$$);
select * from pg_temp.error_of($$select pgconductor.invoke('job', '[1, 2]')$$);
select * from pg_temp.error_of($$select pgconductor.invoke('job', '"text"')$$);
select * from pg_temp.error_of($$select pgconductor.invoke('job', '42')$$);
-- dedupe_key: empty string
select * from pg_temp.error_of($$select pgconductor.invoke('job', dedupe_key => '')$$);
-- throttle and debounce together
select * from pg_temp.error_of($$select pgconductor.invoke('job', throttle_seconds => 5, debounce_seconds => 5)$$);
-- debounce_max_wait without debounce
select * from pg_temp.error_of($$select pgconductor.invoke('job', debounce_max_wait_seconds => 30)$$);
-- non-positive windows
select * from pg_temp.error_of($$select pgconductor.invoke('job', throttle_seconds => 0)$$);
select * from pg_temp.error_of($$select pgconductor.invoke('job', debounce_seconds => -1)$$);
-- a non-positive max wait; run_at with debounce (debounce decides when it runs)
select * from pg_temp.error_of($$select pgconductor.invoke('job', debounce_seconds => 5, debounce_max_wait_seconds => 0)$$);
select * from pg_temp.error_of($$select pgconductor.invoke('job', debounce_seconds => 5, run_at => '2030-01-01 00:00:00+00')$$);
-- nothing was written
select pg_temp.written() = :'before' as nothing_written;

---------------------------------------------------------------- invoke_many
-- task name and queue as for invoke
select * from pg_temp.error_of($$select pgconductor.invoke_many(null, '[{}]')$$);
select * from pg_temp.error_of($$select pgconductor.invoke_many('job', '[{}]', queue => '')$$);
-- items: not a JSON array
select * from pg_temp.error_of($$select pgconductor.invoke_many('job', null)$$);
select * from pg_temp.error_of($$select pgconductor.invoke_many('job', '{"payload": {}}')$$);
-- an item that is not an object
select * from pg_temp.error_of($$select pgconductor.invoke_many('job', '[{}, 1]')$$);
-- unknown item keys
select * from pg_temp.error_of($$select pgconductor.invoke_many('job', '[{"payload": {}, "queue": "x", "delay": 1}]')$$);
-- payload not an object
select * from pg_temp.error_of($$select pgconductor.invoke_many('job', '[{"payload": [1]}]')$$);
select * from pg_temp.error_of($$select pgconductor.invoke_many('job', '[{"payload": null}]')$$);
-- dedupe_key not a string, or empty
select * from pg_temp.error_of($$select pgconductor.invoke_many('job', '[{"dedupe_key": 5}]')$$);
select * from pg_temp.error_of($$select pgconductor.invoke_many('job', '[{"dedupe_key": ""}]')$$);
-- priority not a number, not an integer, out of range
select * from pg_temp.error_of($$select pgconductor.invoke_many('job', '[{"priority": "5"}]')$$);
select code, message from pg_temp.error_of($$select pgconductor.invoke_many('job', '[{"priority": 1.5}]')$$);
select code, message from pg_temp.error_of($$select pgconductor.invoke_many('job', '[{"priority": 1e12}]')$$);
-- run_at not a string, not a timestamp
select * from pg_temp.error_of($$select pgconductor.invoke_many('job', '[{"run_at": 5}]')$$);
select code, message from pg_temp.error_of($$select pgconductor.invoke_many('job', '[{"run_at": "soon"}]')$$);
select code, message from pg_temp.error_of($$select pgconductor.invoke_many('job', '[{"run_at": "2026-13-01"}]')$$);
-- throttle_seconds not an integer
select code, message from pg_temp.error_of($$select pgconductor.invoke_many('job', '[{"throttle_seconds": "abc"}]')$$);
select code, message from pg_temp.error_of($$select pgconductor.invoke_many('job', '[{"throttle_seconds": {}}]')$$);
-- flow control: the same rules as invoke, the item named
select * from pg_temp.error_of($$select pgconductor.invoke_many('job', '[{}, {"throttle_seconds": 5, "debounce_seconds": 5}]')$$);
select * from pg_temp.error_of($$select pgconductor.invoke_many('job', '[{"debounce_max_wait_seconds": 5}]')$$);
select * from pg_temp.error_of($$select pgconductor.invoke_many('job', '[{"debounce_seconds": 0}]')$$);
select * from pg_temp.error_of($$select pgconductor.invoke_many('job', '[{"payload": {}}, {"debounce_seconds": 5, "run_at": "2030-01-01T00:00:00Z"}]')$$);
-- valid items before a bad one are not written either
select code, message from pg_temp.error_of($$select pgconductor.invoke_many('job',
    '[{"payload": {"n": 2}}, {"payload": {"n": 3}, "dedupe_key": "k"}, {"payload": "bad"}]')$$);
select pg_temp.written() = :'before' as nothing_written;
select payload from pgconductor._executions where dedupe_key = 'k';

---------------------------------------------------------------- register_worker
-- worker id null
select * from pg_temp.error_of($$select pgconductor.register_worker(null, 'w', '[]')$$);
-- lease not positive
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '[]', 0)$$);
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '[]', null)$$);
-- tasks not an array of objects
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', null)$$);
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '{"name": "a"}')$$);
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '["a"]')$$);
-- task name missing, not a string, empty, too long
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '[{"queue": "q"}]')$$);
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '[{"name": 5}]')$$);
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '[{"name": ""}]')$$);
select code, message from pg_temp.error_of(format($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '[{"name": "%s"}]')$$, repeat('n', 201)));
-- queue empty
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '[{"name": "a", "queue": ""}]')$$);
-- max_attempts not a positive integer
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '[{"name": "a", "max_attempts": 0}]')$$);
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '[{"name": "a", "max_attempts": -3}]')$$);
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '[{"name": "a", "max_attempts": 2.5}]')$$);
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '[{"name": "a", "max_attempts": "3"}]')$$);
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '[{"name": "a", "max_attempts": 1000001}]')$$);
-- retention not {"days": N >= 0}, 0 or false
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '[{"name": "a", "remove_on_complete": {"days": -1}}]')$$);
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '[{"name": "a", "remove_on_complete": {"days": "1"}}]')$$);
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '[{"name": "a", "remove_on_complete": {"weeks": 1}}]')$$);
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '[{"name": "a", "remove_on_complete": {"days": 1, "hours": 2}}]')$$);
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '[{"name": "a", "remove_on_fail": true}]')$$);
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '[{"name": "a", "remove_on_fail": 7}]')$$);
select * from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w', '[{"name": "a", "remove_on_fail": "7 days"}]')$$);
-- a valid task before a bad one is not written either
select code, message from pg_temp.error_of($$select pgconductor.register_worker('00000000-0000-0000-0000-000000000002', 'w',
    '[{"name": "fine", "queue": "new_queue"}, {"name": "a", "max_attempts": 0}]')$$);
select pg_temp.written() = :'before' as nothing_written;

---------------------------------------------------------------- report
select * from pg_temp.error_of($$select pgconductor.report('00000000-0000-0000-0000-000000000001', null)$$);
select * from pg_temp.error_of($$select pgconductor.report('00000000-0000-0000-0000-000000000001', '{}')$$);
select code, message from pg_temp.error_of($$select pgconductor.report('00000000-0000-0000-0000-000000000001', '[1]')$$);
select code, message from pg_temp.error_of($$select pgconductor.report('00000000-0000-0000-0000-000000000001', '[{"run": 1, "outcome": "completed"}]')$$);
select code, message from pg_temp.error_of($$select pgconductor.report('00000000-0000-0000-0000-000000000001', '[{"id": "00000000-0000-0000-0000-000000000009", "outcome": "completed"}]')$$);
select code, message from pg_temp.error_of($$select pgconductor.report('00000000-0000-0000-0000-000000000001', '[{"id": "00000000-0000-0000-0000-000000000009", "attempt": "1", "outcome": "completed"}]')$$);
select code, message from pg_temp.error_of($$select pgconductor.report('00000000-0000-0000-0000-000000000001', '[{"id": "00000000-0000-0000-0000-000000000009", "run": 1}]')$$);
select code, message from pg_temp.error_of($$select pgconductor.report('00000000-0000-0000-0000-000000000001', '[{"id": "00000000-0000-0000-0000-000000000009", "run": 1, "outcome": "succeeded"}]')$$);

---------------------------------------------------------------- cancel, maintenance, clock
select * from pg_temp.error_of($$select pgconductor.cancel(null)$$);
select * from pg_temp.error_of($$select pgconductor.maintenance(0)$$);
select * from pg_temp.error_of($$select pgconductor.set_fake_time(null)$$);

-- after all of the above, nothing was written
select pg_temp.written() = :'before' as nothing_written;

-- register_worker: one task declared twice
select code, message from pg_temp.error_of($$select pgconductor.register_worker(gen_random_uuid(), 'w', '[{"name": "a"}, {"name": "a"}]')$$);
-- report: an id that is not a uuid, a fractional attempt
select code, message from pg_temp.error_of($$select pgconductor.report(gen_random_uuid(), '[{"id": "nope", "run": 1, "outcome": "completed"}]')$$);
select code, message from pg_temp.error_of($$select pgconductor.report(gen_random_uuid(), '[{"id": "00000000-0000-0000-0000-000000000009", "run": 1.5, "outcome": "completed"}]')$$);
-- claim: limit must be positive
select code, message from pg_temp.error_of($$select * from pgconductor.claim(gen_random_uuid(), 'default', null, null)$$);
-- claim: an unknown worker (or one whose lease expired) must register first (PGC03)
select code, message from pg_temp.error_of($$select * from pgconductor.claim('00000000-0000-0000-0000-0000000000ff', 'default', null, 1)$$);
-- retention beyond 100 years, a queue name over 48 bytes (multi-byte), a non-string queue
select code, message from pg_temp.error_of($$select pgconductor.register_worker(gen_random_uuid(), 'w', '[{"name": "a", "remove_on_complete": {"days": 1e9}}]')$$);
select code, message from pg_temp.error_of(format($f$select pgconductor.invoke('a', queue => %L)$f$, repeat('é', 30)));
select code, message from pg_temp.error_of($$select pgconductor.register_worker(gen_random_uuid(), 'w', '[{"name": "a", "queue": 5}]')$$);
-- a fractional-looking integer max_attempts is fine
select pgconductor.register_worker('00000000-0000-0000-0000-0000000000fe', 'w', '[{"name": "whole", "max_attempts": 2.0}]');
select max_attempts from pgconductor._tasks where name = 'whole';
-- cancel: a reason over 1000 bytes
select code, message from pg_temp.error_of(format($f$select pgconductor.cancel(gen_random_uuid(), %L)$f$, repeat('x', 1001)));
-- dedupe keys need read committed (a repeatable read snapshot would miss a concurrent caller's row)
begin isolation level repeatable read;
select code, message from pg_temp.error_of($$select pgconductor.invoke('a', dedupe_key => 'k')$$);
rollback;
