-- pgconductor: claiming ready executions (the hot path).

-- Claims up to p_limit ready executions of a queue for a worker in one statement:
-- pending, run_at reached, of one of p_task_names (null: any task), in the order
-- priority desc, run_at, insertion order. Rows locked by another claim are skipped
-- (SKIP LOCKED), so no execution is ever handed to two workers. Each claimed row
-- becomes running, counts one attempt, and comes back with its stored steps.
-- Raises PGC03 unless the worker is registered with a live lease.
create function pgconductor.claim(
    p_worker_id uuid,
    p_queue text,
    p_task_names text[] default null,
    p_limit int default 1
)
returns table (
    id uuid,
    task_name text,
    payload jsonb,
    attempt int,
    max_attempts int,
    event_name text,
    steps jsonb
)
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_now timestamptz := pgconductor.now();
begin
    if p_limit is null or p_limit < 1 then
        perform pgconductor._invalid('limit', 'must be a positive integer', p_limit::text);
    end if;
    -- A worker whose lease lapsed may have had its executions recovered: it must
    -- register again before it takes more (else one execution could run twice in it).
    if not exists (select 1 from pgconductor._workers w
                   where w.id = p_worker_id and w.last_seen_at >= v_now - w.lease) then
        raise exception using
            errcode = 'PGC03',
            message = 'pgconductor: worker is not registered or its lease expired',
            detail = format('worker_id = %s', p_worker_id),
            hint = 'call pgconductor.register_worker again';
    end if;
    return query
    with picked as (
        select e.id
        from pgconductor._executions e
        where e.status = 'pending'
          and e.queue = p_queue
          and e.run_at <= v_now
          and (p_task_names is null or e.task_name = any (p_task_names))
        order by e.priority desc, e.run_at, e.seq
        limit p_limit
        for update skip locked
    ), claimed as (
        update pgconductor._executions e
        set status = 'running', attempts = e.attempts + 1, started_at = v_now, worker_id = p_worker_id
        from picked
        where e.id = picked.id
        returning e.id, e.task_name, e.payload, e.attempts, e.max_attempts, e.event_name,
                  e.priority, e.run_at, e.seq
    )
    select c.id, c.task_name, c.payload, c.attempts,
           pgconductor._max_attempts(c.task_name, c.max_attempts),
           c.event_name,
           (select pg_catalog.jsonb_object_agg(s.name, s.result)
            from pgconductor._steps s where s.execution_id = c.id)
    from claimed c
    order by c.priority desc, c.run_at, c.seq;
end;
$$;
comment on function pgconductor.claim(uuid, text, text[], int) is
    'Worker: claim up to p_limit ready executions of a queue (SKIP LOCKED; priority desc, run_at, insertion order) with their steps.';
