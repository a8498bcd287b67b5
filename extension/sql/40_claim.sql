-- pgconductor: claiming ready executions (the hot path).

-- Claims up to p_limit ready executions of a queue for a worker in one statement:
-- pending, run_at reached, of one of p_task_names (null: any task), in the order
-- priority desc, run_at, insertion order. Rows locked by another claim are skipped
-- (SKIP LOCKED), so no execution is ever handed to two workers. Each claimed row
-- becomes running, counts one attempt, and comes back with its stored steps.
-- Tasks with a concurrency limit never have more than that many running executions
-- across all workers. Raises PGC03 unless the worker is registered with a live lease.
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
    v_task record;
    v_free int;
    v_limited text[] := '{}';
    v_capped text[] := '{}';
    v_caps int[] := '{}';
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
    -- Tasks with a concurrency limit: each is served by one claim at a time (a transaction
    -- advisory lock; a claim that cannot take it leaves the task out this time instead of
    -- waiting), and gets at most limit - running executions. Running rows are counted, so
    -- a slot frees itself on every way out of running (report, cancel, release, recovery).
    for v_task in
        select t.name, t.concurrency from pgconductor._tasks t
        where t.concurrency is not null and (p_task_names is null or t.name = any (p_task_names))
    loop
        v_limited := v_limited || v_task.name;
        if pg_catalog.pg_try_advisory_xact_lock(
                pg_catalog.hashtextextended('pgconductor.concurrency' || chr(31) || v_task.name, 0)) then
            v_free := v_task.concurrency - (select pg_catalog.count(*)::int from pgconductor._executions r
                                            where r.status = 'running' and r.task_name = v_task.name);
            if v_free > 0 then
                v_capped := v_capped || v_task.name;
                v_caps := v_caps || least(v_free, p_limit);
            end if;
        end if;
    end loop;

    return query
    with free_picks as (
        select e.id, e.priority, e.run_at, e.seq
        from pgconductor._executions e
        where e.status = 'pending'
          and e.queue = p_queue
          and e.run_at <= v_now
          and (p_task_names is null or e.task_name = any (p_task_names))
          and not (e.task_name = any (v_limited))
        order by e.priority desc, e.run_at, e.seq
        limit p_limit
        for update skip locked
    ), capped_picks as (
        select x.id, x.priority, x.run_at, x.seq
        from unnest(v_capped, v_caps) as c(name, cap)
        cross join lateral (
            select e.id, e.priority, e.run_at, e.seq
            from pgconductor._executions e
            where e.status = 'pending' and e.queue = p_queue and e.run_at <= v_now and e.task_name = c.name
            order by e.priority desc, e.run_at, e.seq
            limit c.cap
            for update skip locked) x
    ), picked as (
        select p.id from (
            select * from free_picks
            union all
            select * from capped_picks) p
        order by p.priority desc, p.run_at, p.seq
        limit p_limit
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
