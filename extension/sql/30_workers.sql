-- pgconductor: worker registration and heartbeats.

-- Registers (or re-registers) a worker and declares its tasks: upserts each task's
-- queue, max_attempts and retention, and the worker's lease. Refuses bad task
-- declarations (PGC01) before writing anything.
-- p_tasks: [{"name", "queue", "max_attempts", "concurrency", "batch": {"size", "timeout_ms"},
--            "window": ["HH:MM", "HH:MM", "<zone>"?], "remove_on_complete", "remove_on_fail"}, ...]
create function pgconductor.register_worker(
    p_worker_id uuid,
    p_name text,
    p_tasks jsonb,
    p_lease_seconds int default 60
)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_now timestamptz := pgconductor.now();
    v_task jsonb;
    v_ord bigint;
    v_prefix text;
    v_rows pgconductor._tasks[] := '{}';
    v_row pgconductor._tasks;
    v_window record;
begin
    if p_worker_id is null then
        perform pgconductor._invalid('worker_id', 'must not be null', null);
    end if;
    if p_lease_seconds is null or p_lease_seconds <= 0 then
        perform pgconductor._invalid('lease_seconds', 'must be a positive number of seconds', p_lease_seconds::text);
    end if;
    if p_tasks is null or pg_catalog.jsonb_typeof(p_tasks) <> 'array' then
        perform pgconductor._invalid('tasks', 'must be a JSON array of task objects', p_tasks::text);
    end if;

    for v_task, v_ord in select e.v, e.ord from pg_catalog.jsonb_array_elements(p_tasks) with ordinality e(v, ord) loop
        v_prefix := format('tasks[%s].', v_ord - 1);
        if pg_catalog.jsonb_typeof(v_task) <> 'object' then
            perform pgconductor._invalid(format('tasks[%s]', v_ord - 1), 'must be a JSON object', v_task::text);
        end if;
        if pg_catalog.jsonb_typeof(v_task -> 'name') is distinct from 'string' then
            perform pgconductor._invalid(v_prefix || 'name', 'must be a non-empty string', (v_task -> 'name')::text);
        end if;
        perform pgconductor._check_name(v_prefix || 'name', v_task ->> 'name', 200);
        if exists (select 1 from pg_catalog.unnest(v_rows) r where r.name = v_task ->> 'name') then
            perform pgconductor._invalid(v_prefix || 'name', 'is declared twice', v_task ->> 'name');
        end if;
        if pg_catalog.jsonb_typeof(v_task -> 'queue') not in ('string', 'null') then
            perform pgconductor._invalid(v_prefix || 'queue', 'must be a string', (v_task -> 'queue')::text);
        end if;
        perform pgconductor._check_name(v_prefix || 'queue', coalesce(v_task ->> 'queue', 'default'), 48);
        if v_task ? 'max_attempts' and (pg_catalog.jsonb_typeof(v_task -> 'max_attempts') <> 'number'
                or (v_task ->> 'max_attempts')::numeric <> pg_catalog.trunc((v_task ->> 'max_attempts')::numeric)
                or (v_task ->> 'max_attempts')::numeric < 1
                or (v_task ->> 'max_attempts')::numeric > 1000000) then
            perform pgconductor._invalid(v_prefix || 'max_attempts', 'must be a positive integer', (v_task -> 'max_attempts')::text);
        end if;
        if v_task ? 'concurrency' and v_task -> 'concurrency' <> 'null'::jsonb
           and (pg_catalog.jsonb_typeof(v_task -> 'concurrency') <> 'number'
                or (v_task ->> 'concurrency')::numeric <> pg_catalog.trunc((v_task ->> 'concurrency')::numeric)
                or (v_task ->> 'concurrency')::numeric < 1
                or (v_task ->> 'concurrency')::numeric > 1000000) then
            perform pgconductor._invalid(v_prefix || 'concurrency', 'must be null or a positive integer',
                (v_task -> 'concurrency')::text);
        end if;
        if v_task ? 'batch' and v_task -> 'batch' <> 'null'::jsonb and not coalesce((
               pg_catalog.jsonb_typeof(v_task -> 'batch') = 'object'
               and (v_task -> 'batch') - '{size,timeout_ms}'::text[] = '{}'::jsonb
               and pg_catalog.jsonb_typeof(v_task -> 'batch' -> 'size') = 'number'
               and pg_catalog.jsonb_typeof(v_task -> 'batch' -> 'timeout_ms') = 'number'
               and (v_task -> 'batch' ->> 'size') ~ '^[0-9]{1,5}$'
               and (v_task -> 'batch' ->> 'size')::int between 1 and 10000
               and (v_task -> 'batch' ->> 'timeout_ms') ~ '^[0-9]{1,9}$'), false) then
            perform pgconductor._invalid(v_prefix || 'batch',
                'must be null or {"size": 1..10000, "timeout_ms": N >= 0}', (v_task -> 'batch')::text);
        end if;
        select * into v_window from pgconductor._parse_window(v_prefix || 'window', v_task -> 'window');
        v_row := row(
            v_task ->> 'name',
            coalesce(v_task ->> 'queue', 'default'),
            coalesce((v_task ->> 'max_attempts')::numeric::int, 3),
            (v_task ->> 'concurrency')::numeric::int,
            (v_task -> 'batch' ->> 'size')::int,
            (v_task -> 'batch' ->> 'timeout_ms')::int,
            pgconductor._retention(v_prefix || 'remove_on_complete', v_task -> 'remove_on_complete', interval '7 days'),
            pgconductor._retention(v_prefix || 'remove_on_fail', v_task -> 'remove_on_fail', interval '30 days'),
            v_window.window_start, v_window.window_end, v_window.window_timezone,
            v_now)::pgconductor._tasks;
        v_rows := v_rows || v_row;
    end loop;

    insert into pgconductor._queues (name, created_at)
    select distinct r.queue, v_now from pg_catalog.unnest(v_rows) r
    on conflict (name) do nothing;

    insert into pgconductor._tasks as t
        (name, queue, max_attempts, concurrency, batch_size, batch_timeout_ms, remove_on_complete,
         remove_on_fail, window_start, window_end, window_timezone, updated_at)
    select r.name, r.queue, r.max_attempts, r.concurrency, r.batch_size, r.batch_timeout_ms,
           r.remove_on_complete, r.remove_on_fail, r.window_start, r.window_end, r.window_timezone, r.updated_at
    from pg_catalog.unnest(v_rows) r
    on conflict (name) do update set
        queue = excluded.queue, max_attempts = excluded.max_attempts, concurrency = excluded.concurrency,
        batch_size = excluded.batch_size, batch_timeout_ms = excluded.batch_timeout_ms,
        remove_on_complete = excluded.remove_on_complete, remove_on_fail = excluded.remove_on_fail,
        window_start = excluded.window_start, window_end = excluded.window_end,
        window_timezone = excluded.window_timezone, updated_at = excluded.updated_at;

    insert into pgconductor._workers as w (id, name, queues, lease, started_at, last_seen_at)
    values (p_worker_id, coalesce(p_name, ''),
            coalesce((select pg_catalog.array_agg(distinct r.queue) from pg_catalog.unnest(v_rows) r), '{}'),
            pg_catalog.make_interval(secs => p_lease_seconds), v_now, v_now)
    on conflict (id) do update set
        name = excluded.name, queues = excluded.queues, lease = excluded.lease, last_seen_at = excluded.last_seen_at;
end;
$$;
comment on function pgconductor.register_worker(uuid, text, jsonb, int) is
    'Register a worker process and upsert the tasks it runs (queue, max_attempts, retention). Bad declarations raise PGC01.';

-- Records that a worker is alive; returns the ids of its running executions whose
-- cancellation was requested, or null when the worker is unknown (it must register
-- again). With p_held (every execution the worker still runs or has to report), running
-- executions it holds but does not know about and that were claimed more than p_grace
-- ago are released (a claim whose answer was lost with a connection).
create function pgconductor.heartbeat(
    p_worker_id uuid,
    p_held uuid[] default null,
    p_grace interval default interval '30 seconds'
)
returns uuid[]
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_now timestamptz := pgconductor.now();
begin
    update pgconductor._workers w set last_seen_at = v_now where w.id = p_worker_id;
    if not found then
        return null;
    end if;
    if p_held is not null then
        perform pgconductor._release_unheld(p_worker_id, p_held, v_now - coalesce(p_grace, interval '0'));
    end if;
    return coalesce((
        select pg_catalog.array_agg(e.id)
        from pgconductor._executions e
        where e.worker_id = p_worker_id and e.status = 'running' and e.cancel_reason is not null), '{}');
end;
$$;
comment on function pgconductor.heartbeat(uuid, uuid[], interval) is
    'Keep a worker''s lease; release what it holds unknowingly; returns its running executions with a cancel request (null: register again).';

-- Removes a worker that stops cleanly; whatever it still holds goes back to pending
-- (no attempt counted), as a release would, or ends cancelled if that was requested.
create function pgconductor.unregister_worker(p_worker_id uuid)
returns int
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_count int;
begin
    -- Every execution it still holds is one it no longer runs.
    v_count := pgconductor._release_unheld(p_worker_id, '{}', null);
    delete from pgconductor._workers w where w.id = p_worker_id;
    return v_count;
end;
$$;
comment on function pgconductor.unregister_worker(uuid) is
    'Remove a cleanly stopped worker; anything it still held returns to pending without counting an attempt.';

-- Releases the running executions a worker holds but does not know about, claimed
-- before p_started_before (null: any): pending again, attempt not counted, or
-- cancelled when a cancel was requested. Returns how many.
create function pgconductor._release_unheld(p_worker_id uuid, p_held uuid[], p_started_before timestamptz)
returns int
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_queues text[];
    v_finished boolean;
    v_children jsonb;
begin
    with orphans as (
        update pgconductor._executions e
        set status = case when e.cancel_reason is not null then 'cancelled' else 'pending' end,
            attempts = case when e.cancel_reason is not null then e.attempts else e.attempts - 1 end,
            finished_at = case when e.cancel_reason is not null then pgconductor.now() end,
            error = case when e.cancel_reason is not null
                         then pg_catalog.jsonb_build_object('type', 'Cancelled', 'message', e.cancel_reason)
                         else e.error end,
            expires_at = case when e.cancel_reason is not null
                              then pgconductor._expires_at(e.task_name, 'cancelled', pgconductor.now()) end,
            worker_id = null
        where e.worker_id = p_worker_id and e.status = 'running'
          and (p_started_before is null or e.started_at < p_started_before)
          and not (e.id = any (pg_catalog.array_remove(coalesce(p_held, '{}'), null)))
        returning e.id, e.queue, e.status, e.parent_id, e.parent_step, e.error
    )
    select pg_catalog.array_agg(o.queue), coalesce(pg_catalog.bool_or(o.status = 'cancelled'), false),
           pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'id', o.id, 'parent_id', o.parent_id, 'step', o.parent_step, 'status', o.status,
               'result', null, 'error', o.error)) filter (where o.parent_id is not null and o.status = 'cancelled')
    into v_queues, v_finished, v_children from orphans o;
    if v_children is not null then
        perform pgconductor._settle_children(v_children);
    end if;
    if v_finished then
        perform pg_catalog.pg_notify('pgconductor.finished', '');
    end if;
    perform pg_catalog.pg_notify(pgconductor.queue_channel(d.q), '')
    from (select distinct u from pg_catalog.unnest(v_queues) u) d(q);
    return coalesce(pg_catalog.cardinality(v_queues), 0);
end;
$$;

-- Releases the running executions a worker holds but does not know about (a claim
-- whose answer was lost with the connection): pending again, attempt not counted
-- (cancelled instead when a cancel was requested).
-- p_held lists every execution the worker still runs or has yet to report.
create function pgconductor.release_orphans(p_worker_id uuid, p_held uuid[])
returns int
language sql
volatile
set search_path = ''
as $$ select pgconductor._release_unheld(p_worker_id, p_held, null) $$;
comment on function pgconductor.release_orphans(uuid, uuid[]) is
    'Worker: after a lost connection, release running executions it holds but never received (no attempt counted).';
