-- pgconductor: claiming ready executions (the hot path).

-- One execution as claim hands it to a worker: what its handler needs (payload, attempt,
-- event name, stored steps, batch group) and the run token its reports quote.
create type pgconductor.claimed_execution as (
    id uuid,
    task_name text,
    payload jsonb,
    attempt int,
    max_attempts int,
    event_name text,
    steps jsonb,
    batch_group int,
    run int
);

-- Claims up to p_limit ready executions in one statement: pending, run_at reached, in
-- the queue, of p_task_name if given, else of p_task_names (null: any) except p_exclude;
-- in the order priority desc, run_at, insertion order; rows locked by another claim are
-- skipped. Each becomes running (one attempt counted) and comes back with its stored
-- steps and its run token (run: the claim count, which reports and step saves quote);
-- with p_batch_size, rows are numbered into groups of that size (batch_group).
create function pgconductor._claim_rows(
    p_worker_id uuid,
    p_queue text,
    p_task_name text,
    p_task_names text[],
    p_exclude text[],
    p_limit int,
    p_now timestamptz,
    p_batch_size int
)
returns setof pgconductor.claimed_execution
language plpgsql
volatile
set search_path = ''
set plan_cache_mode = force_custom_plan  -- see claim
as $$
begin
    return query
    with picked as (
        select e.id
        from pgconductor._executions e
        where e.status = 'pending'
          and e.queue = p_queue
          and e.run_at <= p_now
          and (p_task_name is null or e.task_name = p_task_name)
          and (p_task_names is null or e.task_name = any (p_task_names))
          and not (e.task_name = any (p_exclude))
        order by e.priority desc, e.run_at, e.seq
        limit p_limit
        for update skip locked
    ), claimed as (
        update pgconductor._executions e
        set status = 'running', attempts = e.attempts + 1, claims = e.claims + 1, started_at = p_now,
            worker_id = p_worker_id
        from picked
        where e.id = picked.id
        returning e.id, e.task_name, e.payload, e.attempts, e.max_attempts, e.event_name,
                  e.priority, e.run_at, e.seq, e.claims
    )
    select c.id, c.task_name, c.payload, c.attempts,
           pgconductor._max_attempts(c.task_name, c.max_attempts),
           c.event_name,
           (select pg_catalog.jsonb_object_agg(s.name, s.result)
            from pgconductor._steps s where s.execution_id = c.id),
           case when p_batch_size is not null then
               ((pg_catalog.row_number() over (order by c.priority desc, c.run_at, c.seq) - 1) / p_batch_size)::int
           end,
           c.claims
    from claimed c
    order by c.priority desc, c.run_at, c.seq;
end;
$$;

-- Claims ready executions of a queue for a worker: up to p_limit handler runs, where a
-- run is one execution, or one group of a batch task. Never hands an execution (or a
-- group) to two workers (SKIP LOCKED; groups are formed inside one claim).
--   Tasks with a concurrency limit never have more than that many running executions
--   across all workers: the free slots are the limit minus the running count, so a slot
--   frees itself on every way out of running.
--   Tasks with a time window are claimed only while it is open; while it is closed, their
--   due executions are moved to waiting until it opens.
--   Batch tasks are claimed in groups of their size; a smaller group only once its
--   oldest ready execution has waited timeout_ms.
--   Limited and batch tasks are each served by one claim at a time (transaction advisory
--   lock; a claim that cannot take it leaves the task out this time instead of waiting),
--   each with about half of the runs still to hand out (fewer when higher priority work
--   of other tasks waits), so no backlog starves the rest.
-- Raises PGC03 unless the worker is registered with a live lease.
create function pgconductor.claim(
    p_worker_id uuid,
    p_queue text,
    p_task_names text[] default null,
    p_limit int default 1
)
returns setof pgconductor.claimed_execution
language plpgsql
volatile
set search_path = ''
-- Plans for the values at hand: a generic plan misjudges how many rows are ready and can
-- fall back to a sequential scan and sort of the whole table.
set plan_cache_mode = force_custom_plan
as $$
declare
    v_now timestamptz := pgconductor.now();
    v_task record;
    v_special text[] := '{}';
    v_closed text[];
    v_remaining int := p_limit;
    v_cap int;
    v_ready int;
    v_oldest timestamptz;
    v_claimed int;
    v_share int;
    v_has_head boolean := false;
    v_head_priority int;
    v_head_run_at timestamptz;
    v_head_seq bigint;
    v_best_priority int;
    v_best_run_at timestamptz;
    v_best_seq bigint;
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

    -- Waiting executions whose time has come (sleep over, child timeout, window open) are
    -- ready again.
    update pgconductor._executions e set status = 'pending', wait_step = null
    where e.id = any (array(
        select w.id from pgconductor._executions w
        where w.status = 'waiting' and w.queue = p_queue and w.run_at <= v_now
        order by w.run_at
        limit 1000
        for update skip locked));

    -- One look at the tasks: which have a concurrency limit or a batch size (served first,
    -- below), and which have a window that is closed now.
    select coalesce(pg_catalog.array_agg(x.name order by x.name) filter (where x.special and not x.closed), '{}'),
           coalesce(pg_catalog.array_agg(x.name) filter (where x.closed), '{}')
    into v_special, v_closed
    from (select t.name, t.concurrency is not null or t.batch_size is not null as special,
                 t.window_start is not null and pgconductor._window_opens_at(
                     t.window_start, t.window_end, t.window_timezone, v_now) > v_now as closed
          from pgconductor._tasks t
          where (t.concurrency is not null or t.batch_size is not null or t.window_start is not null)
            and (p_task_names is null or t.name = any (p_task_names))) x;
    -- A closed window's due executions wait for its next opening (so later claims do not
    -- scan past them); this claim leaves them out.
    if pg_catalog.cardinality(v_closed) > 0 then
        update pgconductor._executions e
        set status = 'waiting', wait_step = null,
            run_at = pgconductor._window_opens_at(t.window_start, t.window_end, t.window_timezone, v_now)
        from pgconductor._tasks t
        where t.name = e.task_name
          and e.id = any (array(
              select c.id from pgconductor._executions c
              where c.status = 'pending' and c.queue = p_queue and c.task_name = any (v_closed)
                and c.run_at <= v_now
              limit 1000
              for update skip locked));
    end if;
    if pg_catalog.cardinality(v_special) > 0 then
        -- The head of the other tasks' ready rows: a special task whose best ready row
        -- comes after it gets the smaller share, so priority order holds for small claims.
        select e.priority, e.run_at, e.seq into v_head_priority, v_head_run_at, v_head_seq
        from pgconductor._executions e
        where e.status = 'pending' and e.queue = p_queue and e.run_at <= v_now
          and (p_task_names is null or e.task_name = any (p_task_names))
          and not (e.task_name = any (v_special || v_closed))
        order by e.priority desc, e.run_at, e.seq
        limit 1;
        v_has_head := found;
    end if;

    for v_task in
        select t.name, t.concurrency, t.batch_size, t.batch_timeout_ms,
               t.name = v_special[pg_catalog.cardinality(v_special)] as is_last
        from pgconductor._tasks t
        where t.name = any (v_special)
        order by t.name
    loop
        continue when v_remaining = 0;
        select e.priority, e.run_at, e.seq into v_best_priority, v_best_run_at, v_best_seq
        from pgconductor._executions e
        where e.status = 'pending' and e.queue = p_queue and e.task_name = v_task.name and e.run_at <= v_now
        order by e.priority desc, e.run_at, e.seq
        limit 1;
        continue when not found;
        continue when not pg_catalog.pg_try_advisory_xact_lock(
            pg_catalog.hashtextextended('pgconductor.claim' || chr(31) || v_task.name, 0));
        -- Its share of the runs still to hand out: all of them when nothing else waits and
        -- no other special task follows; else about half, rounded up when its best ready
        -- row comes first in claim order and down when it does not (so it cannot starve
        -- the others, nor jump ahead of higher priority work in a claim of one).
        v_share := case
            when not v_has_head and v_task.is_last then v_remaining
            when not v_has_head
                 or (-v_best_priority, v_best_run_at, v_best_seq) < (-v_head_priority, v_head_run_at, v_head_seq)
                then (v_remaining + 1) / 2
            else v_remaining / 2 end;
        continue when v_share = 0;
        v_cap := v_share * coalesce(v_task.batch_size, 1);
        if v_task.concurrency is not null then
            v_cap := least(v_cap, v_task.concurrency - (
                select pg_catalog.count(*)::int from pgconductor._executions r
                where r.status = 'running' and r.task_name = v_task.name));
        end if;
        continue when v_cap <= 0;
        if v_task.batch_size is not null then
            select pg_catalog.count(*)::int, pg_catalog.min(x.run_at) into v_ready, v_oldest
            from (select e.run_at from pgconductor._executions e
                  where e.status = 'pending' and e.queue = p_queue and e.task_name = v_task.name
                    and e.run_at <= v_now
                  order by e.priority desc, e.run_at, e.seq  -- the claim's order: the ready index
                  limit v_cap) x;
            -- Full groups only, unless the oldest ready one has waited long enough.
            if v_oldest is null or v_oldest > v_now - pg_catalog.make_interval(secs => v_task.batch_timeout_ms / 1000.0) then
                v_cap := least(v_cap, (v_ready / v_task.batch_size) * v_task.batch_size);
            end if;
            continue when v_cap <= 0;
        end if;
        return query select * from pgconductor._claim_rows(
            p_worker_id, p_queue, v_task.name, null, '{}', v_cap, v_now, v_task.batch_size);
        get diagnostics v_claimed = row_count;
        v_remaining := v_remaining - case
            when v_task.batch_size is null then v_claimed
            else (v_claimed + v_task.batch_size - 1) / v_task.batch_size end;
    end loop;

    if v_remaining > 0 then
        return query select * from pgconductor._claim_rows(
            p_worker_id, p_queue, null, p_task_names, v_special || v_closed, v_remaining, v_now, null);
    end if;
end;
$$;
comment on function pgconductor.claim(uuid, text, text[], int) is
    'Worker: claim up to p_limit handler runs of a queue (SKIP LOCKED; priority desc, run_at, insertion order), honouring concurrency limits and batch groups.';
