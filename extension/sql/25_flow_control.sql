-- pgconductor: throttle and debounce, and the one entry point every enqueue goes through.

-- Serializes enqueues of one (task, queue, key) for the rest of the transaction
-- (a transaction advisory lock on the key's bucket). Raises PGC01 outside READ
-- COMMITTED: after waiting for the lock, an older snapshot could not see the row a
-- concurrent caller just committed, and the key's rules would break.
create function pgconductor._lock_key(p_task_name text, p_queue text, p_key text)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
    if pg_catalog.current_setting('transaction_isolation') <> 'read committed' then
        perform pgconductor._invalid('transaction_isolation', format(
            'dedupe keys, throttle and debounce need read committed, not %s',
            pg_catalog.current_setting('transaction_isolation')), p_key);
    end if;
    perform pg_catalog.pg_advisory_xact_lock(pgconductor._dedupe_lock(p_task_name, p_queue, p_key));
end;
$$;

-- Throttle: at most one execution per (task, queue, key) per window of p_seconds,
-- counted from the call that queued it (first call wins). Returns the new execution's
-- id, or null when the call falls inside the window (nothing is queued).
create function pgconductor._enqueue_throttled(
    p_task_name text, p_queue text, p_payload jsonb, p_key text, p_priority int,
    p_run_at timestamptz, p_now timestamptz, p_seq bigint, p_seconds int
)
returns uuid
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_opened boolean;
begin
    perform pgconductor._lock_key(p_task_name, p_queue, coalesce(p_key, ''));
    insert into pgconductor._throttles as t (task_name, queue, key, window_ends_at)
    values (p_task_name, p_queue, coalesce(p_key, ''), p_now + pg_catalog.make_interval(secs => p_seconds))
    on conflict (task_name, queue, key) do update set window_ends_at = excluded.window_ends_at
        where t.window_ends_at <= p_now
    returning true into v_opened;
    if v_opened is null then
        return null;
    end if;
    return pgconductor._insert_execution(p_task_name, p_queue, p_payload, p_key, p_priority,
        coalesce(p_run_at, p_now), p_now, p_seq, null);
end;
$$;

-- Debounce: one pending execution per (task, queue, key). A call while it is pending
-- takes its place: the last call's payload and priority, run_at = now + p_seconds,
-- but never later than p_max_wait_seconds after the burst's first call (the
-- execution's created_at); every call of the burst returns the same id. When none is
-- pending (none yet, or the previous one already runs), the call starts a new burst.
create function pgconductor._enqueue_debounced(
    p_task_name text, p_queue text, p_payload jsonb, p_key text, p_priority int,
    p_now timestamptz, p_seq bigint, p_seconds int, p_max_wait_seconds int
)
returns uuid
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_id uuid;
    v_delay interval := pg_catalog.make_interval(secs => p_seconds);
    v_max_wait interval := pg_catalog.make_interval(secs => coalesce(p_max_wait_seconds, 0));
begin
    perform pgconductor._lock_key(p_task_name, p_queue, coalesce(p_key, ''));
    -- The status re-check makes a concurrent claim win: then a new burst starts.
    update pgconductor._executions e
    set payload = p_payload, priority = p_priority,
        run_at = case when p_max_wait_seconds is null then p_now + v_delay
                      else least(p_now + v_delay, e.created_at + v_max_wait) end
    where e.id = (
            select p.id from pgconductor._executions p
            where p.task_name = p_task_name and p.queue = p_queue
              and p.debounce_key = coalesce(p_key, '') and p.status = 'pending'
              and p.started_at is null  -- one that has run (retry, release, sleep): a new burst
            order by p.seq desc
            limit 1)
      and e.status = 'pending'
    returning e.id into v_id;
    if v_id is not null then
        return v_id;
    end if;
    return pgconductor._insert_execution(p_task_name, p_queue, p_payload, p_key, p_priority,
        p_now + least(v_delay, case when p_max_wait_seconds is null then v_delay else v_max_wait end),
        p_now, p_seq, coalesce(p_key, ''));
end;
$$;

-- Enqueues one validated call by its rules: throttle, debounce, dedupe key, or plain.
-- Returns the execution's id (null when throttled away). Does not notify.
create function pgconductor._enqueue_any(
    p_task_name text, p_queue text, p_payload jsonb, p_dedupe_key text, p_priority int,
    p_run_at timestamptz, p_now timestamptz, p_seq bigint,
    p_throttle_seconds int, p_debounce_seconds int, p_debounce_max_wait_seconds int
)
returns uuid
language plpgsql
volatile
set search_path = ''
as $$
begin
    if p_throttle_seconds is not null then
        return pgconductor._enqueue_throttled(p_task_name, p_queue, p_payload, p_dedupe_key, p_priority,
            p_run_at, p_now, p_seq, p_throttle_seconds);
    elsif p_debounce_seconds is not null then
        return pgconductor._enqueue_debounced(p_task_name, p_queue, p_payload, p_dedupe_key, p_priority,
            p_now, p_seq, p_debounce_seconds, p_debounce_max_wait_seconds);
    end if;
    return pgconductor._enqueue(p_task_name, p_queue, p_payload, p_dedupe_key, p_priority, p_run_at, p_now, p_seq);
end;
$$;
