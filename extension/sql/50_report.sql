-- pgconductor: results, retries, releases and cancellation.

-- Applies a worker's buffered outcomes in one statement. p_reports is a JSON array of
-- {"id", "run", "outcome": "completed"|"failed"|"released"|"sleep", "result", "error"}, where
-- run is the token the claim returned.
--   completed: stores result; deleted at once when the task's remove_on_complete is 0.
--   failed:    pending again after 15 s, 30 s, 60 s, 60 s... while attempts < max_attempts,
--              else failed; error kept. A requested cancel turns it into cancelled.
--   released:  pending again now, the attempt not counted (shutdown); cancelled if requested;
--              waiting until its window opens when its task's window is closed.
--   sleep:     waiting until now + "seconds", the attempt not counted, the sleep saved as the
--              step "step" (the resumed run passes it); cancelled if requested.
-- A finished child's outcome is saved as its parent's step, waking the parent.
-- Reports for executions this worker no longer holds (lease recovered, another run)
-- are ignored. Returns how many reports were applied.
create function pgconductor.report(p_worker_id uuid, p_reports jsonb)
returns int
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_now timestamptz := pgconductor.now();
    v_bad record;
    v_applied int;
    v_released_queues text[];
    v_finished boolean;
    v_children jsonb;
begin
    if p_reports is null or pg_catalog.jsonb_typeof(p_reports) <> 'array' then
        perform pgconductor._invalid('reports', 'must be a JSON array', p_reports::text);
    end if;
    select e.ord, e.v into v_bad
    from pg_catalog.jsonb_array_elements(p_reports) with ordinality e(v, ord)
    where pg_catalog.jsonb_typeof(e.v) <> 'object'
       or (e.v ->> 'outcome') is null
       or (e.v ->> 'outcome') not in ('completed', 'failed', 'released', 'sleep')
       or (e.v ->> 'outcome') = 'sleep' and not coalesce(
               pg_catalog.jsonb_typeof(e.v -> 'step') = 'string' and (e.v ->> 'step') <> ''
               and pg_catalog.jsonb_typeof(e.v -> 'seconds') = 'number' and (e.v ->> 'seconds')::numeric >= 0
               and (e.v ->> 'seconds')::numeric <= 3153600000, false)
       or not pgconductor._is_run_ref(e.v)
    order by e.ord limit 1;
    if found then
        perform pgconductor._invalid(format('reports[%s]', v_bad.ord - 1),
            'must be {"id", "run", "outcome": completed|failed|released|sleep, ...}', v_bad.v::text);
    end if;

    with r as (
        select x.id, x.run, x.outcome, x.result, x.error, x.step, x.seconds
        from pg_catalog.jsonb_to_recordset(p_reports)
            as x(id uuid, run int, outcome text, result jsonb, error jsonb, step text, seconds numeric)
    ), cur as (
        select e.id, e.queue, e.parent_id, e.parent_step, r.result, r.error, r.step, r.seconds,
               case
                   when r.outcome = 'completed' then 'completed'
                   when e.cancel_reason is not null then 'cancelled'
                   when w.opens_at > v_now then 'window'
                   when r.outcome = 'released' then 'pending'
                   when r.outcome = 'sleep' then 'waiting'
                   when e.attempts < coalesce(e.max_attempts, t.max_attempts, 3) then 'retry'
                   else 'failed'
               end as next,
               w.opens_at,
               e.attempts,
               case
                   when t.name is null then
                       case when r.outcome = 'completed' then interval '7 days' else interval '30 days' end
                   when r.outcome = 'completed' then t.remove_on_complete
                   else t.remove_on_fail
               end as keep,
               t.concurrency is not null as limited,
               e.cancel_reason
        from r
        join pgconductor._executions e on e.id = r.id
        left join pgconductor._tasks t on t.name = e.task_name
        -- A release while its task's window is closed waits for the next opening.
        cross join lateral (select case when r.outcome = 'released' and t.window_start is not null
                                        then pgconductor._window_opens_at(
                                            t.window_start, t.window_end, t.window_timezone, v_now)
                                   end as opens_at) w
        where e.status = 'running' and e.worker_id = p_worker_id and e.claims = r.run
        for update of e
    ), slept as (
        -- A sleep is saved as the step of its name, so the resumed run passes it at once.
        insert into pgconductor._steps (execution_id, name, result, created_at)
        select cur.id, cur.step, pg_catalog.jsonb_build_object(
                   'slept_until', v_now + pg_catalog.make_interval(secs => cur.seconds::double precision)), v_now
        from cur where cur.next = 'waiting'
        on conflict (execution_id, name) do nothing
    ), removed as (
        delete from pgconductor._executions e
        using cur
        where e.id = cur.id and cur.next in ('completed', 'failed', 'cancelled') and cur.keep = interval '0'
        returning e.id
    ), updated as (
        update pgconductor._executions e
        set status = case cur.next when 'retry' then 'pending' when 'window' then 'waiting' else cur.next end,
            result = case when cur.next = 'completed' then cur.result else e.result end,
            error = case
                        when cur.next in ('completed', 'waiting', 'window') or cur.next = 'pending' and cur.error is null
                            then e.error
                        when cur.next = 'cancelled' then pg_catalog.jsonb_build_object(
                            'type', 'Cancelled', 'message', e.cancel_reason)
                        else cur.error end,
            attempts = case when cur.next in ('pending', 'waiting', 'window') then e.attempts - 1 else e.attempts end,
            run_at = case
                         when cur.next = 'window' then cur.opens_at
                         when cur.next = 'waiting' then v_now + pg_catalog.make_interval(secs => cur.seconds::double precision)
                         when cur.next = 'retry' then v_now + pg_catalog.make_interval(
                             secs => least(60.0, 15 * pg_catalog.power(2, cur.attempts - 1)))
                         when cur.next = 'pending' then v_now
                         else e.run_at end,
            wait_step = null,  -- a sleep ends by time; only invoke_child waits on a step
            finished_at = case when cur.next in ('completed', 'failed', 'cancelled') then v_now end,
            expires_at = case when cur.next in ('completed', 'failed', 'cancelled') then v_now + cur.keep end,
            worker_id = null
        from cur
        where e.id = cur.id
          and not coalesce(cur.next in ('completed', 'failed', 'cancelled') and cur.keep = interval '0', false)
        returning e.id
    )
    select (select pg_catalog.count(*) from removed) + (select pg_catalog.count(*) from updated),
           (select pg_catalog.array_agg(distinct cur.queue) from cur where cur.next = 'pending' or cur.limited),
           exists (select 1 from cur where cur.next in ('completed', 'failed', 'cancelled')),
           (select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                'id', cur.id, 'parent_id', cur.parent_id, 'step', cur.parent_step, 'status', cur.next,
                'result', case when cur.next = 'completed' then cur.result end,
                'error', case
                             when cur.next = 'cancelled' then pg_catalog.jsonb_build_object(
                                 'type', 'Cancelled', 'message', cur.cancel_reason)
                             when cur.next = 'failed' then cur.error end))
            from cur where cur.parent_id is not null and cur.next in ('completed', 'failed', 'cancelled'))
    into v_applied, v_released_queues, v_finished, v_children;

    -- Finished children: their outcomes become their parents' steps.
    if v_children is not null then
        perform pgconductor._settle_children(v_children);
    end if;

    -- Released work is ready now, and a limited task's slot may have freed: wake the
    -- queue's workers. Waiters on results re-check.
    perform pg_catalog.pg_notify(pgconductor.queue_channel(q), '') from pg_catalog.unnest(v_released_queues) q;
    if v_finished then
        perform pg_catalog.pg_notify('pgconductor.finished', '');
    end if;
    return v_applied;
end;
$$;
comment on function pgconductor.report(uuid, jsonb) is
    'Worker: apply buffered outcomes (completed, failed with retry/backoff, released) of many executions in one call.';

-- Cancels the unfinished executions among p_roots and their unfinished descendants:
-- pending or waiting -> cancelled; running -> flagged (cancel_reason) and their workers
-- notified on channel pgconductor.cancel with payload '<id> <reason>'. Rows are locked
-- deepest first, the order in which a child's report locks the child and then its parent,
-- so that cancel and report cannot deadlock. Returns every row it ended or flagged.
create function pgconductor._cancel_tree(p_roots uuid[], p_reason text, p_now timestamptz)
returns table (id uuid, ended boolean, parent_id uuid, parent_step text)
language sql
volatile
set search_path = ''
as $$
    with recursive tree (id, depth) as (
        select e.id, 0 from pgconductor._executions e
        where e.id = any (p_roots) and e.status in ('pending', 'waiting', 'running')
        union all
        select c.id, tree.depth + 1
        from pgconductor._executions c join tree on c.parent_id = tree.id
        where tree.depth < 1000
    ), targets as (
        select e.id, e.status from pgconductor._executions e join tree on tree.id = e.id
        where e.status in ('pending', 'waiting', 'running')
        order by tree.depth desc, e.id
        for update of e
    ), ended as (
        update pgconductor._executions e
        set status = 'cancelled', finished_at = p_now, cancel_reason = p_reason, worker_id = null,
            error = pg_catalog.jsonb_build_object('type', 'Cancelled', 'message', p_reason),
            expires_at = pgconductor._expires_at(e.task_name, 'cancelled', p_now)
        from targets t
        where e.id = t.id and t.status in ('pending', 'waiting')
        returning e.id, e.parent_id, e.parent_step
    ), flagged as (
        update pgconductor._executions e
        set cancel_reason = coalesce(e.cancel_reason, p_reason)
        from targets t
        where e.id = t.id and t.status = 'running'
        returning e.id, e.parent_id, e.parent_step, e.cancel_reason
    ), told as (
        select f.id, f.parent_id, f.parent_step,
               pg_catalog.pg_notify('pgconductor.cancel', f.id::text || ' ' || f.cancel_reason)
        from flagged f
    )
    select x.id, true, x.parent_id, x.parent_step from ended x
    union all
    select t.id, false, t.parent_id, t.parent_step from told t
$$;

-- Cancels an execution and its unfinished descendants (children, grandchildren...):
-- pending or waiting -> cancelled at once (never runs); running -> flagged and its
-- worker notified on channel pgconductor.cancel with payload '<id> <reason>' (the
-- handler's signal is set; it ends cancelled unless it completes). A cancelled child's
-- parent gets the outcome (ChildFailed). Returns true if the execution was pending,
-- waiting or running, false if finished or unknown.
create function pgconductor.cancel(execution_id uuid, reason text default 'cancelled')
returns boolean
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_now timestamptz := pgconductor.now();
    v_reason text := coalesce(cancel.reason, 'cancelled');
    v_roots uuid[] := array[cancel.execution_id];
    v_done uuid[] := '{}';
    v_ids uuid[];
    v_children jsonb;
    v_ended int := 0;
    v_found boolean;
    v_answer boolean;
    v_pass int := 0;
    v_tries int;
begin
    if cancel.execution_id is null then
        perform pgconductor._invalid('execution_id', 'must not be null', null);
    end if;
    if pg_catalog.octet_length(cancel.reason) > 1000 then
        perform pgconductor._invalid('reason', 'must be at most 1000 bytes', pg_catalog.left(cancel.reason, 40) || '...');
    end if;
    -- Each pass starts from a new snapshot: a child that an invoke_child was creating
    -- while this call waited for its parent's lock is found by the next pass (an
    -- invoke_child after that sees its parent cancelled and creates nothing).
    loop
        v_pass := v_pass + 1;
        -- A pass locks deepest first, but a pass after the first locks children of rows it
        -- already holds, and a concurrent invoke_children or report may hold those rows
        -- and wait for ours: on a deadlock the pass is undone and tried again.
        v_tries := 0;
        loop
            begin
                select pg_catalog.array_agg(t.id),
                       pg_catalog.count(*) filter (where t.ended),
                       pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                           'id', t.id, 'parent_id', t.parent_id, 'step', t.parent_step, 'status', 'cancelled',
                           'result', null,
                           'error', pg_catalog.jsonb_build_object('type', 'Cancelled', 'message', v_reason)))
                           filter (where t.ended and t.parent_id is not null),
                       coalesce(pg_catalog.bool_or(t.id = cancel.execution_id), false)
                into v_ids, v_ended, v_children, v_found
                from pgconductor._cancel_tree(v_roots, v_reason, v_now) t;
                if v_children is not null then
                    perform pgconductor._settle_children(v_children);
                end if;
                exit;
            exception when deadlock_detected then
                v_tries := v_tries + 1;
                if v_tries >= 5 then
                    raise;
                end if;
            end;
        end loop;
        if v_pass = 1 then
            v_answer := v_found;  -- the answer is about the execution itself, in the first pass
        end if;
        if v_ended > 0 then
            perform pg_catalog.pg_notify('pgconductor.finished', '');
        end if;
        exit when v_ids is null;
        v_done := v_done || v_ids;
        select pg_catalog.array_agg(c.id) into v_roots
        from pgconductor._executions c
        where c.parent_id = any (v_ids) and c.status in ('pending', 'waiting', 'running')
          and not (c.id = any (v_done));
        exit when v_roots is null;
    end loop;
    return v_answer;
end;
$$;
comment on function pgconductor.cancel(uuid, text) is
    'Cancel an execution and its unfinished descendants: pending/waiting end cancelled now; running are flagged and their workers told. False if already finished.';
